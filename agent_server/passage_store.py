"""Random access to the passages of a wiki-18 JSONL corpus, by row and by id, without loading it.

A store directory holds `offsets.npy` (uint64, N+1 byte offsets: row i is bytes
offsets[i]:offsets[i+1] of the corpus), an id table, and `passages.json` (what was indexed, and how).
Opening memory-maps the corpus and the arrays, so a 21M-passage store opens in milliseconds and no
passage text sits in Python memory: the OS page cache holds what was recently read.

Id lookup: when every id is the decimal row number plus a constant (wiki-18: "1".."21015324" on
rows 0..21015323) no table is needed; otherwise `id_hashes.npy` (sorted 64-bit blake2b of the ids)
and `id_rows.npy` (their rows) are binary-searched, and the id read back from the row confirms a hit.

A gzip corpus cannot be memory-mapped: `build` decompresses it once to `corpus.jsonl` inside the
store directory (so budget its uncompressed size on disk), and the store reads that copy.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import mmap
import os
import re
import shutil
from array import array
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm import tqdm

from search_env.corpus import Passage, format_contents
from search_env.corpus_fingerprint import corpus_fingerprint
from search_env.corpus_validation import clean_line

META = "passages.json"
OFFSETS = "offsets.npy"
ID_HASHES = "id_hashes.npy"
ID_ROWS = "id_rows.npy"
GZ_COPY = "corpus.jsonl"
FORMAT = 1

# Most corpora put a string id first; reading it by regex is ~10x cheaper than json.loads per line.
_LEADING_ID = re.compile(rb'^\s*\{\s*"id"\s*:\s*"([^"\\]*)"')


class CorpusChangedError(RuntimeError):
    """The corpus file differs from the one the store (or an index) was built from."""


def _id_hash(passage_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(passage_id.encode(), digest_size=8).digest(), "little")


def _record_id(line: bytes, row: int) -> str:
    match = _LEADING_ID.match(line)
    if match:
        return match.group(1).decode()
    record = json.loads(line)
    # A record without an id gets its row (iter_corpus uses the line number; they agree without blank lines).
    return str(record.get("id", row))


def _file_stamp(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class PassageStore:
    """Passages of one corpus by row (0-based file order, as iter_corpus yields them) or by id."""

    def __init__(self, store_dir: Path, data_path: Path, meta: dict[str, Any], corpus_path: Path) -> None:
        self.store_dir = store_dir
        self.data_path = data_path  # the file read: the corpus, or its decompressed copy
        self.corpus_path = corpus_path
        self.meta = meta
        self._offsets = np.load(store_dir / OFFSETS, mmap_mode="r")
        self._count = len(self._offsets) - 1
        ids = meta["ids"]
        self._id_base: int | None = ids["base"] if ids["kind"] == "rows" else None
        if self._id_base is None:
            self._id_hashes = np.load(store_dir / ID_HASHES, mmap_mode="r")
            self._id_rows = np.load(store_dir / ID_ROWS, mmap_mode="r")
        with data_path.open("rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)

    # -- building ---------------------------------------------------------------------------------

    @classmethod
    def build(cls, corpus: str | Path, store_dir: str | Path, *, progress: bool = True,
              skip_lines: Collection[int] = ()) -> PassageStore:
        """One streaming pass over `corpus` (`.jsonl` or `.jsonl.gz`) writing a store at `store_dir`.

        Written to a sibling temp folder and renamed into place, so a crash leaves no half store.
        A `.gz` corpus is decompressed to `store_dir/corpus.jsonl` on the way; with `skip_lines`
        (1-based lines that corpus validation left out) the good lines are copied there instead, each
        with a string id (search_env.corpus_validation.clean_line), and the store reads that copy.
        """
        corpus, store_dir = Path(corpus).absolute(), Path(store_dir).absolute()
        if not corpus.is_file():
            raise FileNotFoundError(f"corpus not found: {corpus}")
        if store_dir.exists():
            if not (store_dir / META).exists() and any(store_dir.iterdir()):
                raise FileExistsError(f"{store_dir} exists and is not a passage store; not overwriting it")
            shutil.rmtree(store_dir)
        tmp = store_dir.with_name(f".{store_dir.name}.partial-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            gz = corpus.suffix == ".gz"
            copied = gz or bool(skip_lines)
            ids = cls._write_tables(corpus, tmp, gz=gz, progress=progress, skip_lines=frozenset(skip_lines))
            meta = {
                "format": FORMAT,
                "count": ids.pop("count"),
                "source": {"path": str(corpus), **_file_stamp(corpus),
                           "fingerprint": corpus_fingerprint(corpus, with_name=False)},
                "data_file": GZ_COPY if copied else None,
                "skipped_lines": len(skip_lines),
                "ids": ids,
            }
            (tmp / META).write_text(json.dumps(meta, indent=1) + "\n")
            try:
                tmp.rename(store_dir)
            except OSError:
                if not cls.exists(store_dir):
                    raise
                shutil.rmtree(tmp)  # another process built the same store meanwhile
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls.open(store_dir)

    @staticmethod
    def _write_tables(corpus: Path, out: Path, *, gz: bool, progress: bool,
                      skip_lines: frozenset[int]) -> dict[str, Any]:
        offsets = array("Q")
        hashes = array("Q")  # filled only once the ids stop being row numbers
        base: int | None = None
        rows_are_ids = True
        position = 0
        with contextlib.ExitStack() as stack:
            raw = stack.enter_context(corpus.open("rb"))
            reader: BinaryIO = stack.enter_context(gzip.open(raw, "rb")) if gz else raw  # type: ignore[arg-type]
            copy = stack.enter_context((out / GZ_COPY).open("wb")) if gz or skip_lines else None
            bar = stack.enter_context(tqdm(
                total=corpus.stat().st_size, unit="B", unit_scale=True, disable=not progress,
                desc=f"passage store {corpus.name}" + (" (decompressing)" if gz else "")))
            for lineno, line in enumerate(reader, start=1):
                if skip_lines:
                    if lineno in skip_lines or not line.strip():
                        continue
                    line = clean_line(line, corpus, lineno)
                if copy is not None:
                    copy.write(line)
                if line.strip():
                    row = len(offsets)
                    offsets.append(position)
                    passage_id = _record_id(line, row)
                    if rows_are_ids:
                        if row == 0 and passage_id.isdigit() and str(int(passage_id)) == passage_id:
                            base = int(passage_id)
                        if base is None or passage_id != str(row + base):
                            rows_are_ids = False
                            # Back-fill the hashes of the rows that did follow the pattern.
                            hashes.extend(_id_hash(str(r + (base or 0))) for r in range(row))
                    if not rows_are_ids:
                        hashes.append(_id_hash(passage_id))
                    if row % 20000 == 0:
                        bar.update(raw.tell() - bar.n)
                position += len(line)
            offsets.append(position)
            bar.update(bar.total - bar.n)
        count = len(offsets) - 1
        if count == 0:
            raise ValueError(f"{corpus}: no passages")
        np.save(out / OFFSETS, np.frombuffer(offsets, dtype=np.uint64))
        if rows_are_ids:
            return {"count": count, "kind": "rows", "base": base}
        hash_arr = np.frombuffer(hashes, dtype=np.uint64)
        order = np.argsort(hash_arr, kind="stable")  # stable: a duplicated id finds its first row
        np.save(out / ID_HASHES, hash_arr[order])
        np.save(out / ID_ROWS, order.astype(np.uint32 if count < 2**32 else np.uint64))
        return {"count": count, "kind": "hashed"}

    # -- opening ----------------------------------------------------------------------------------

    @staticmethod
    def exists(store_dir: str | Path) -> bool:
        return (Path(store_dir) / META).is_file()

    @classmethod
    def open(cls, store_dir: str | Path, corpus: str | Path | None = None) -> PassageStore:
        """Open a built store; `corpus` overrides the recorded corpus path (for a moved corpus).

        Raises CorpusChangedError if the corpus is not the one the store was built from.
        """
        store_dir = Path(store_dir).absolute()
        meta_path = store_dir / META
        if not meta_path.is_file():
            raise FileNotFoundError(f"no passage store at {store_dir} (missing {META})")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{store_dir}: passage store format {meta.get('format')}, expected {FORMAT}")
        source = Path(corpus).absolute() if corpus is not None else Path(meta["source"]["path"])
        copy = meta["data_file"]
        if source.exists():
            cls._check_same(source, meta["source"], store_dir)
        elif corpus is not None or copy is None:
            raise FileNotFoundError(f"corpus {source} of passage store {store_dir} not found")
        data_path = store_dir / copy if copy else source
        offsets = np.load(store_dir / OFFSETS, mmap_mode="r")
        if data_path.stat().st_size != int(offsets[-1]):
            raise CorpusChangedError(f"{data_path} has changed since passage store {store_dir} was built")
        return cls(store_dir, data_path, meta, source)

    @staticmethod
    def _check_same(path: Path, recorded: dict[str, Any], store_dir: Path) -> None:
        stamp = _file_stamp(path)
        if stamp["size"] == recorded["size"] and (
            stamp["mtime_ns"] == recorded["mtime_ns"]
            # A copied or touched file keeps its bytes but not its mtime: compare content edges.
            or corpus_fingerprint(path, with_name=False) == recorded["fingerprint"]
        ):
            return
        raise CorpusChangedError(
            f"corpus {path} changed since the passage store {store_dir} was built from it "
            f"(size {recorded['size']} -> {stamp['size']}); rebuild the index or store"
        )

    @classmethod
    def open_or_build(cls, corpus: str | Path, store_dir: str | Path, *, progress: bool = True,
                      skip_lines: Collection[int] = ()) -> PassageStore:
        """Open the store at `store_dir` if it was built from `corpus` (skipping as many lines), else
        (re)build it."""
        if cls.exists(store_dir):
            try:
                store = cls.open(store_dir, corpus)
                if store.meta.get("skipped_lines", 0) == len(skip_lines):
                    return store
                store.close()
            except CorpusChangedError:
                pass
        return cls.build(corpus, store_dir, progress=progress, skip_lines=skip_lines)

    # -- lookups ----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def _passage(self, row: int, start: int, end: int) -> Passage:
        record = json.loads(self._map[start:end])
        contents = record.get("contents")
        if contents is None:
            contents = format_contents(str(record.get("title", "")), str(record.get("text", "")))
        return Passage(id=str(record.get("id", row)), contents=str(contents))

    def get_rows(self, rows: Iterable[int]) -> list[Passage]:
        """Passages at these 0-based rows, in the order given; IndexError for a row out of range."""
        rows_arr = np.fromiter((int(r) for r in rows), dtype=np.int64) if not isinstance(rows, np.ndarray) \
            else rows.astype(np.int64, copy=False)
        if rows_arr.size == 0:
            return []
        if rows_arr.min() < 0 or rows_arr.max() >= self._count:
            raise IndexError(f"row out of range 0..{self._count - 1}")
        starts = self._offsets[rows_arr].tolist()
        ends = self._offsets[rows_arr + 1].tolist()
        return [self._passage(r, s, e) for r, s, e in zip(rows_arr.tolist(), starts, ends, strict=True)]

    def ids(self) -> np.ndarray:
        """Every passage's id in row order, a numpy str array (N,); ids that are row numbers plus a
        constant are generated, others read from the corpus (1.1 s for 222k passages, under load)."""
        if self._id_base is not None:
            return np.arange(self._id_base, self._id_base + self._count).astype(str)
        chunks = [np.arange(start, min(self._count, start + 65536)) for start in range(0, self._count, 65536)]
        return np.array([p.id for rows in chunks for p in self.get_rows(rows)], dtype=str)

    def _candidate_rows(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each id (int64, -1 if unknown); in the hashed table, the first row of its hash run."""
        out = np.full(len(ids), -1, dtype=np.int64)
        if self._id_base is not None:
            for i, passage_id in enumerate(ids):
                if passage_id.isdigit() and str(int(passage_id)) == passage_id:
                    row = int(passage_id) - self._id_base
                    if 0 <= row < self._count:
                        out[i] = row
            return out
        if not ids:
            return out
        keys = np.fromiter((_id_hash(p) for p in ids), dtype=np.uint64, count=len(ids))
        left = np.minimum(np.searchsorted(self._id_hashes, keys, side="left"), self._count - 1)
        hit = self._id_hashes[left] == keys
        out[hit] = self._id_rows[left[hit]]
        return out

    def _resolve(self, passage_id: str) -> int:
        """Row of an id by walking its whole hash run (for the rare 64-bit hash collision)."""
        key = np.uint64(_id_hash(passage_id))
        j = int(np.searchsorted(self._id_hashes, key, side="left"))
        while j < self._count and self._id_hashes[j] == key:
            row = int(self._id_rows[j])
            if self.get_rows([row])[0].id == passage_id:
                return row
            j += 1
        return -1

    def _lookup(self, ids: Sequence[str]) -> tuple[np.ndarray, list[Passage | None]]:
        rows = self._candidate_rows(ids)
        found = np.flatnonzero(rows >= 0)
        passages: list[Passage | None] = [None] * len(ids)
        for i, passage in zip(found.tolist(), self.get_rows(rows[found]), strict=True):
            passages[i] = passage
        if self._id_base is None:
            # A hash match is confirmed by the id read back from the row.
            for i, passage_id in enumerate(ids):
                if rows[i] >= 0 and passages[i].id != passage_id:  # type: ignore[union-attr]
                    rows[i] = self._resolve(passage_id)
                    passages[i] = self.get_rows([rows[i]])[0] if rows[i] >= 0 else None
        return rows, passages

    def rows_of_ids(self, ids: Sequence[str]) -> np.ndarray:
        """Row of each id (int64), -1 where the corpus has no such id."""
        return self._lookup(ids)[0]

    def get_ids(self, ids: Sequence[str]) -> list[Passage]:
        """Passages with these ids, in the order given; KeyError naming the first unknown id."""
        rows, passages = self._lookup(ids)
        missing = np.flatnonzero(rows < 0)
        if missing.size:
            raise KeyError(f"passage id {ids[int(missing[0])]!r} not in {self.corpus_path}")
        return passages  # type: ignore[return-value]

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()

    def __enter__(self) -> PassageStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cached_store(corpus: str | Path, root: Path | None = None) -> PassageStore:
    """The store of `corpus` under `searchgym_home()/passage-stores/`, built on first use."""
    from search_env.home import searchgym_home

    corpus = Path(corpus).absolute()
    key = corpus_fingerprint(corpus)[:16]
    return PassageStore.open_or_build(corpus, (root or searchgym_home()) / "passage-stores" / key)
