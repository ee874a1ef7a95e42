"""The data sets the env server offers, by name, and their questions, loaded once and off the event loop.

The operator offers data sets at start-up (`--data NAME=FOLDER|FILE|HF_NAME`, `--worlds small,default`);
a client only names one and one of its splits. A folder's splits are the QA files in it
(`<split>.jsonl`, `.jsonl.gz`, `.json`, `.json.gz`, `.parquet`), listed once at start-up, so a
client's split is looked up among them and never becomes part of a path. A file is one split named
by its stem. A name that is no local path is a Hugging Face data set whose split and config are
names that `datasets` resolves. Questions are loaded once per (data set, split, config) in a worker
thread, concurrent requests for the same data waiting on that one load, and kept in a small LRU
cache; the subsets by `hops` are lists of the same records.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from search_env.env_data import WORLD_PREFIX
from search_env.env_schema import NAME_PATTERN
from search_env.qa_data import QARecord, load_qa
from search_env.safe_paths import UnsafeName, resolve_under
from search_env.world.config import SPLITS, WORLD_PRESETS

log = logging.getLogger("agent_server.env")

QA_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")  # in load_qa's order of preference
DEFAULT_WORLDS = ("tiny", "small", "default")  # `large` takes minutes and GBs to generate: opt-in only
_NAME = re.compile(NAME_PATTERN)
Records = tuple[QARecord, ...]


class DataRefused(Exception):
    """A data request the server does not serve (unknown name, split, config or hops); HTTP 422."""

    status = 422

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class Offer:
    """One named data set: its splits (split name -> local file) or, for a Hugging Face one, its id."""

    name: str
    files: Mapping[str, Path]
    world: str | None = None
    hf_name: str | None = None

    def splits(self) -> list[str]:
        if self.world is not None:
            return sorted(SPLITS)
        return sorted(self.files) if self.hf_name is None else ["<any split of the Hugging Face data set>"]

    def default_split(self) -> str:
        return next(iter(self.files)) if len(self.files) == 1 else "train"


@dataclass(frozen=True, slots=True)
class DataKey:
    """What changes the loaded questions (limit does not: it slices them)."""

    name: str
    split: str
    config: str | None


def _split_of(path: Path) -> tuple[str, int] | None:
    """(split, rank of its suffix) for a QA file name; None for other names."""
    lower = path.name.lower()
    for rank, suffix in enumerate(QA_SUFFIXES):
        if lower.endswith(suffix):
            stem = path.name[: -len(suffix)]
            return (stem, rank) if _NAME.match(stem) else None
    return None


def _folder_files(name: str, folder: Path) -> dict[str, Path]:
    found: dict[str, tuple[int, Path]] = {}
    for entry in sorted(folder.iterdir()):
        named = _split_of(entry)
        if named is None or not entry.is_file():
            continue
        try:
            resolve_under(folder, entry.name, what=f"data set {name!r} file", single=True)
        except UnsafeName as err:
            # A link out of the folder offers a file the operator did not hand over: skipped.
            log.warning("%s; not offered", err)
            continue
        split, rank = named
        if split not in found or rank < found[split][0]:  # load_qa's preference: .jsonl first
            found[split] = (rank, entry)
    return {split: entry for split, (_, entry) in sorted(found.items())}


def make_offer(name: str, source: str) -> Offer:
    """The offer for `--data NAME=SOURCE`; ValueError for a source that cannot be served."""
    if not name or name == WORLD_PREFIX or name.startswith(WORLD_PREFIX + ":"):
        raise ValueError(f"--data name {name!r} is empty or reserved for the embedded world")
    path = Path(source).expanduser()
    if path.is_dir():
        files = _folder_files(name, path)
        if not files:
            raise ValueError(f"--data {name}: no QA files ({', '.join(QA_SUFFIXES)}) in {path}")
        return Offer(name, files)
    if path.is_file():
        named = _split_of(path)
        if named is None:
            raise ValueError(f"--data {name}: {path} is not a QA file named <split>{{{', '.join(QA_SUFFIXES)}}}")
        return Offer(name, {named[0]: path})
    if path.is_absolute() or source.startswith(".") or _split_of(path) is not None:
        raise ValueError(f"--data {name}: no such file or folder: {path}")
    return Offer(name, {}, hf_name=source)


class DataRegistry:
    """The offered data sets and a bounded cache of their questions.

    `key()` checks a client's (data, split, config) and raises DataRefused; `records()` loads
    (once, in a worker thread) and raises DataRefused when the data cannot be loaded, logging why
    (the file and its problem stay in the server's log, not in the answer).
    """

    def __init__(
        self,
        datasets: Mapping[str, str] | None = None,
        worlds: Iterable[str] = DEFAULT_WORLDS,
        *,
        cache_size: int = 8,
        max_concurrent_loads: int = 2,
    ):
        self.worlds = tuple(dict.fromkeys(worlds))
        unknown = [w for w in self.worlds if w not in WORLD_PRESETS]
        if unknown:
            raise ValueError(f"unknown world presets {unknown}: known are {sorted(WORLD_PRESETS)}")
        self.offers: dict[str, Offer] = {
            f"{WORLD_PREFIX}:{w}": Offer(f"{WORLD_PREFIX}:{w}", {}, world=w) for w in self.worlds
        }
        if "default" in self.worlds:
            self.offers[WORLD_PREFIX] = Offer(WORLD_PREFIX, {}, world="default")
        for name, source in (datasets or {}).items():
            self.offers[name] = make_offer(name, source)
        self.cache_size = max(1, cache_size)
        self._full: OrderedDict[DataKey, Records] = OrderedDict()
        self._hops: OrderedDict[tuple[DataKey, tuple[int, ...]], Records] = OrderedDict()
        self._loading: dict[DataKey, asyncio.Task[Records]] = {}
        self._load_slots = asyncio.Semaphore(max(1, max_concurrent_loads))
        self.loads = 0

    def offered(self) -> dict[str, list[str]]:
        """Each offered name with its splits (what /info shows and errors list)."""
        return {name: offer.splits() for name, offer in sorted(self.offers.items()) if name != WORLD_PREFIX}

    def key(self, data: str, split: str | None, config: str | None) -> DataKey:
        offer = self.offers.get(data)
        if offer is None:
            raise DataRefused(f"unknown data set {data!r}: this server offers {sorted(self.offered())}")
        split = split or offer.default_split()
        if offer.hf_name is None:
            if config is not None:
                raise DataRefused(f"data set {data!r} takes no data_config (only a Hugging Face data set does)")
            if split not in offer.splits():
                raise DataRefused(f"data set {data!r} has no split {split!r}: its splits are {offer.splits()}")
        return DataKey(data if offer.world is None else f"{WORLD_PREFIX}:{offer.world}", split, config)

    async def records(self, key: DataKey, hops: Sequence[int] | None = None) -> Records:
        """The questions of `key` (with `hops`: those whose metadata hops are listed); DataRefused if none."""
        full = await self._load(key)
        if hops is None:
            return full
        present = {r.metadata.get("hops") for r in full}
        # Hops not in the data change nothing, so they make no new cache entry.
        wanted = tuple(sorted(set(hops) & present))
        if not wanted:
            known = sorted(h for h in present if isinstance(h, int))
            wanted_text = sorted(set(hops))
            raise DataRefused(f"no questions with hops {wanted_text} in {key.name!r} {key.split!r}: it has {known}")
        entry = (key, wanted)
        subset = self._hops.get(entry)
        if subset is None:
            subset = tuple(r for r in full if r.metadata.get("hops") in wanted)
            self._remember(self._hops, entry, subset, 8 * self.cache_size)
        return subset

    async def _load(self, key: DataKey) -> Records:
        cached = self._full.get(key)
        if cached is not None:
            self._full.move_to_end(key)
            return cached
        task = self._loading.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load_once(key))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, even if all waiters left
            self._loading[key] = task
        # Shielded: a client that gives up does not cancel a load others wait for.
        return await asyncio.shield(task)

    async def _load_once(self, key: DataKey) -> Records:
        try:
            async with self._load_slots:
                records = await asyncio.to_thread(self._read, key)
            self.loads += 1
            self._remember(self._full, key, records, self.cache_size)
            return records
        finally:
            self._loading.pop(key, None)

    def _read(self, key: DataKey) -> Records:
        offer = self.offers[key.name]
        try:
            if offer.world is not None:
                from search_env.world.store import ensure_world

                records = load_qa(ensure_world(offer.world).qa[key.split])
            elif offer.hf_name is not None:
                records = load_qa(offer.hf_name, split=key.split, config=key.config)
            else:
                records = load_qa(offer.files[key.split])
        except Exception as err:
            log.exception("data set %r split %r (config %r) could not be loaded", key.name, key.split, key.config)
            raise DataRefused(
                f"data set {key.name!r} split {key.split!r} could not be loaded ({type(err).__name__}; "
                "the server's log says why)"
            ) from None
        if not records:
            raise DataRefused(f"data set {key.name!r} split {key.split!r} holds no questions")
        log.info("loaded %d questions of %r split %r", len(records), key.name, key.split)
        return tuple(records)

    @staticmethod
    def _remember(cache: OrderedDict, key: object, value: Records, size: int) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > size:
            cache.popitem(last=False)
