"""The data sets a benchmark runs on, and the `--data` spec syntax that names them.

world / world:<preset>            the embedded world (test split), e.g. world:default
world:<preset>:single | :multi    its single-hop or multi-hop (2-3 hop) questions
nq, triviaqa, popqa, hotpotqa,    the seven Search-R1 evaluation sets from Hugging Face
2wikimultihopqa, musique,         (RUC-NLPIR/FlashRAG_datasets), each on the split Search-R1
bamboogle                         evaluates (test, else dev); `search-r1` means all seven
path/to/file.jsonl | .parquet     a local QA file (FlashRAG / Search-R1 records) or a folder
owner/name[:config]               any Hugging Face data set
<spec>@<split>                    any of the above on another split, e.g. hotpotqa@train
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from search_env.env_data import WORLD_PREFIX, load_env_records
from search_env.qa_data import QARecord
from search_env.world.config import WORLD_PRESETS

FLASHRAG = "RUC-NLPIR/FlashRAG_datasets"
WORLD_SPLIT = "test"
WORLD_SUBSETS: dict[str, tuple[int, ...]] = {"single": (1,), "multi": (2, 3)}


class EvalDataError(RuntimeError):
    """A data set could not be named or loaded (the message says what to do instead)."""


@dataclass(frozen=True, slots=True)
class EvalSet:
    """One row of the results table: where its questions come from (the env's data options)."""

    name: str
    data: str
    split: str
    config: str | None = None
    hops: tuple[int, ...] | None = None

    def env_options(self) -> dict[str, object]:
        """`data=`, `split=`, ... as SearchQAEnv / RemoteSearchEnv take them."""
        options: dict[str, object] = {"data": self.data, "split": self.split}
        if self.config is not None:
            options["data_config"] = self.config
        if self.hops is not None:
            options["hops"] = list(self.hops)
        return options


# Search-R1's test set (scripts/data_process/qa_search_test_merge.py): each set's test split, else dev.
SEARCH_R1_EVAL_SETS: dict[str, EvalSet] = {
    name: EvalSet(name, FLASHRAG, split, config=name)
    for name, split in (
        ("nq", "test"),
        ("triviaqa", "test"),
        ("popqa", "test"),
        ("hotpotqa", "dev"),
        ("2wikimultihopqa", "dev"),
        ("musique", "dev"),
        ("bamboogle", "test"),
    )
}
ALIASES = {"2wiki": "2wikimultihopqa", "trivia": "triviaqa", "hotpot": "hotpotqa"}
ALL_SEARCH_R1 = "search-r1"


def parse_data_spec(spec: str, split: str | None = None) -> list[EvalSet]:
    """The data set(s) a `--data` spec names; `split` overrides each set's default split
    (an explicit `@split` in the spec wins over both)."""
    text = spec.strip()
    if not text:
        raise EvalDataError("empty data spec")
    explicit_split: str | None = None
    if "@" in text and not Path(text).exists():
        text, _, explicit_split = text.rpartition("@")
    chosen = explicit_split or split

    def with_split(s: EvalSet) -> EvalSet:
        if chosen is None or chosen == s.split:
            return s
        return EvalSet(f"{s.name}@{chosen}", s.data, chosen, s.config, s.hops)

    lowered = text.lower()
    if lowered == ALL_SEARCH_R1:
        return [with_split(s) for s in SEARCH_R1_EVAL_SETS.values()]
    if lowered in SEARCH_R1_EVAL_SETS or lowered in ALIASES:
        return [with_split(SEARCH_R1_EVAL_SETS[ALIASES.get(lowered, lowered)])]
    if lowered == WORLD_PREFIX or lowered.startswith(WORLD_PREFIX + ":"):
        return [with_split(_world_set(text))]
    path = Path(text)
    if path.exists():
        return [EvalSet(path.stem if path.is_file() else path.name, str(path), chosen or "test")]
    if path.suffix in (".jsonl", ".json", ".parquet", ".gz"):
        raise EvalDataError(f"no QA file at {path}")
    if "/" in text:
        name, _, config = text.partition(":")
        return [EvalSet(text, name, chosen or "test", config=config or None)]
    known = ", ".join([*SEARCH_R1_EVAL_SETS, ALL_SEARCH_R1, "world:<preset>[:single|:multi]"])
    raise EvalDataError(f"unknown data set {spec!r}: use one of {known}, a QA file, or a Hugging Face name owner/name")


def _world_set(text: str) -> EvalSet:
    parts = text.split(":")
    preset = parts[1] if len(parts) > 1 and parts[1] else "default"
    if len(parts) > 3:
        raise EvalDataError(f"bad world spec {text!r}: use world:<preset>[:single|:multi]")
    subset = parts[2] if len(parts) == 3 else None
    if preset not in WORLD_PRESETS:
        known = ", ".join(sorted(WORLD_PRESETS))
        raise EvalDataError(f"unknown world preset {preset!r} in {text!r}: use one of {known}")
    if subset is not None and subset not in WORLD_SUBSETS:
        raise EvalDataError(f"bad world subset {subset!r} in {text!r}: use one of {sorted(WORLD_SUBSETS)}")
    name = f"world:{preset}" + (f":{subset}" if subset else "")
    hops = WORLD_SUBSETS[subset] if subset else None
    return EvalSet(name, f"{WORLD_PREFIX}:{preset}", WORLD_SPLIT, hops=hops)


def parse_data_specs(specs: Sequence[str], split: str | None = None) -> list[EvalSet]:
    sets: list[EvalSet] = []
    for spec in specs:
        sets.extend(parse_data_spec(spec, split))
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise EvalDataError(f"a data set is named twice: {names}")
    return sets


def load_eval_records(eval_set: EvalSet, *, skip_bad_lines: bool = False) -> list[QARecord]:
    """The set's questions (the world is generated locally on first use; HF sets come from the hub
    or its cache, and fail with a message naming the way out when offline). A bad record of a file
    raises BadRecordError naming its line or row, unless `skip_bad_lines` leaves it out."""
    try:
        return load_env_records(
            eval_set.data,
            split=eval_set.split,
            config=eval_set.config,
            hops=eval_set.hops,
            skip_bad_lines=skip_bad_lines,
        )
    except (FileNotFoundError, ValueError, ImportError):
        raise
    except Exception as err:  # datasets/huggingface_hub raise many types (offline, gated, missing)
        where = eval_set.data + (f" ({eval_set.config})" if eval_set.config else "")
        raise EvalDataError(
            f"could not load {eval_set.name!r} from Hugging Face data set {where}, split {eval_set.split!r}: "
            f"{type(err).__name__}: {err}. Offline (HF_HUB_OFFLINE=1) it must be in the local cache; "
            "otherwise download it once, or pass a local FlashRAG/Search-R1 .jsonl or .parquet file to --data."
        ) from err
