"""Question-answer records: FlashRAG / Search-R1 files, parquet, or a Hugging Face data set.

Three record shapes are accepted and mapped to one `QARecord`:
- FlashRAG: `{"id", "question", "golden_answers", "metadata"}`;
- Search-R1's verl parquet rows: `data_source`, `prompt` (chat messages holding the templated
  prompt), `reward_model.ground_truth.target`, `extra_info.index` (plus the original `question`
  column, which Search-R1's preprocessing keeps and which is preferred over the prompt);
- plain records with `answer` / `answers` (a string, a list, or TriviaQA's `{"value", "aliases"}`).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from search_env.bad_records import BadRecordError
from search_env.corpus_validation import not_utf8
from search_env.safe_paths import name_parts, resolve_under

log = logging.getLogger(__name__)
# Where a record is: (file or data set, 1-based line or 0-based row/item, "line" | "row" | "item").
Where = tuple[str, int, str]

_JSON_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
_PARQUET_SUFFIXES = (".parquet",)
# Search-R1's instruction template ends with "Question: {question}\n".
_QUESTION_MARKER = "Question:"


class QARecord(BaseModel):
    id: str
    question: str
    golden_answers: list[str]
    data_source: str = ""
    metadata: dict[str, Any] = Field(default_factory=dict)


def load_qa(
    source: str | Path,
    split: str | None = None,
    config: str | None = None,
    limit: int | None = None,
    *,
    skip_bad_lines: bool = False,
) -> list[QARecord]:
    """Load QA records from a local file, a folder holding `<split>.jsonl`/`.parquet`, or a HF data set.

    A local `.jsonl`, `.json`, `.jsonl.gz` or `.parquet` file is read as is (`split` and `config` are
    ignored). Anything that is not an existing path and has no such suffix is taken as a Hugging Face
    data set name and loaded by `datasets.load_dataset(source, config, split=split or "train")`.
    Raises BadRecordError (a ValueError) naming the file and line (JSONL), row (parquet) or item (JSON
    array) of a bad record: not JSON, not UTF-8, no question, no gold answer. With `skip_bad_lines`
    such records are left out and counted in a warning instead; ValueError if none is left. A folder's
    `split` is a plain name: UnsafeName (a ValueError naming it) for one that would make a path out of it.
    """
    path = Path(source)
    if path.is_dir():
        path = _split_file(path, split or "train")
    name = path.name.lower()
    if name.endswith(_JSON_SUFFIXES):
        if not path.exists():
            raise FileNotFoundError(f"no QA file at {path}")
        rows: Iterable[tuple[str, dict[str, Any]]] = _iter_json_rows(path)
    elif name.endswith(_PARQUET_SUFFIXES):
        if not path.exists():
            raise FileNotFoundError(f"no QA file at {path}")
        rows = _iter_parquet_rows(path)
    else:
        rows = _iter_hf_rows(str(source), config, split or "train")
    records: list[QARecord] = []
    skipped: list[BadRecordError] = []
    for index, item in enumerate(rows):
        if limit is not None and len(records) >= limit:
            break
        try:
            if isinstance(item, BadRecordError):
                raise item
            records.append(to_qa_record(item[1], where=item[0], index=index))
        except BadRecordError as err:
            if not skip_bad_lines:
                raise
            skipped.append(err)
    if skipped:
        log.warning("%s: %d bad record(s) skipped (first: %s)", source, len(skipped), skipped[0])
        if not records:
            raise ValueError(f"{source}: no good QA record ({len(skipped)} bad, first: {skipped[0]})")
    return records


def write_qa_jsonl(records: Iterable[QARecord], path: str | Path) -> Path:
    """Write records as FlashRAG-style JSON lines (gzip when the name ends in `.gz`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.model_dump(), ensure_ascii=False) + "\n")
    return path


def to_qa_record(row: dict[str, Any], where: Where | str = "<record>", index: int = 0) -> QARecord:
    """Map one raw record of any accepted shape to a QARecord; `where` (path, position, unit) names it
    in the BadRecordError raised for a record with no question or no gold answer."""
    if not isinstance(row, dict):
        raise _bad(where, f"a QA record must be a JSON object, got {type(row).__name__}")
    question = _question_of(row)
    if not question:
        found = row.get("question")
        detail = "" if found is None else f" (`question` is {type(found).__name__} {str(found)[:40]!r})"
        raise _bad(where, f"record has no question{detail}")
    answers = _answers_of(row)
    if not answers:
        raise _bad(where, "record has no gold answer (`golden_answers`: a non-empty list of strings)")
    extra_info = row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {}
    record_id = row.get("id")
    if record_id is None:
        record_id = extra_info.get("index", index)
    metadata = dict(row["metadata"]) if isinstance(row.get("metadata"), dict) else {}
    if extra_info and "extra_info" not in metadata:
        metadata["extra_info"] = extra_info
    return QARecord(
        id=str(record_id),
        question=question,
        golden_answers=answers,
        data_source=str(row.get("data_source") or ""),
        metadata=metadata,
    )


def _bad(where: Where | str, reason: str) -> BadRecordError:
    if isinstance(where, tuple):
        return BadRecordError(where[0], where[1], reason, unit=where[2])
    return BadRecordError(where, None, reason)


def _question_of(row: dict[str, Any]) -> str:
    question = row.get("question")
    if isinstance(question, str) and question.strip():
        return question.strip()
    # verl rows without the original column: recover the question from the templated prompt.
    prompt = row.get("prompt")
    if isinstance(prompt, str):
        content = prompt
    elif isinstance(prompt, list | tuple):
        messages = [m for m in prompt if isinstance(m, dict)]
        user = [m for m in messages if m.get("role") == "user"] or messages
        content = str(user[-1].get("content") or "") if user else ""
    else:
        return ""
    _, marker, after = content.rpartition(_QUESTION_MARKER)
    return (after if marker else content).strip()


def _answers_of(row: dict[str, Any]) -> list[str]:
    for value in (
        row.get("golden_answers"),
        _dig(row, "reward_model", "ground_truth", "target"),
        row.get("answers"),
        row.get("answer"),
    ):
        answers = _as_answer_list(value)
        if answers:
            return answers
    return []


def _dig(row: dict[str, Any], *keys: str) -> Any:
    value: Any = row
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _as_answer_list(value: Any) -> list[str]:
    if value is None:
        return []
    if hasattr(value, "tolist"):  # numpy arrays from pandas-read parquet
        value = value.tolist()
    if isinstance(value, dict):  # TriviaQA: {"value": ..., "aliases": [...]}
        items = [value.get("value"), *(value.get("aliases") or [])]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        items = [value]
    answers: list[str] = []
    for item in items:
        text = "" if item is None else str(item).strip()
        if text and text not in answers:
            answers.append(text)
    return answers


def _split_file(folder: Path, split: str) -> Path:
    """The file of `split` in `folder`. A split is a name, never a path: UnsafeName (a ValueError) for
    one with a `/`, `..`, NUL and the like, or whose file is a link out of the folder; FileNotFoundError
    when the folder has no file of that split."""
    name_parts(split, folder, what="split", single=True)  # before any suffix is added to it
    for suffix in (".jsonl", ".jsonl.gz", ".json", ".parquet"):
        candidate = resolve_under(folder, f"{split}{suffix}", what="split", single=True)
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no {split}.jsonl / .json / .parquet in {folder}")


Row = tuple[Where, Any] | BadRecordError  # a record and where it is, or why the line is unreadable


def _iter_json_rows(path: Path) -> Iterator[Row]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        data = handle.read()
    if path.name.lower().endswith((".json", ".json.gz")) and data.lstrip().startswith(b"["):
        # A JSON array file (one document); errors name the array index.
        try:
            rows = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        for index, row in enumerate(rows):
            yield (str(path), index, "item"), row
        return
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as err:
            yield BadRecordError(path, lineno, not_utf8(raw, err))
            continue
        except json.JSONDecodeError as err:
            yield BadRecordError(path, lineno, f"not JSON ({err.msg} at column {err.colno})")
            continue
        yield (str(path), lineno, "line"), row


def _iter_parquet_rows(path: Path) -> Iterator[Row]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"reading {path} needs pyarrow: pip install searchgym[data]") from err
    parquet = pq.ParquetFile(path)
    row_index = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield (str(path), row_index, "row"), row
            row_index += 1


def _iter_hf_rows(name: str, config: str | None, split: str) -> Iterator[Row]:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"{name!r} is not a local .jsonl/.json/.parquet file, and loading it as a Hugging Face "
            "data set needs `datasets`: pip install searchgym[data]"
        ) from err
    dataset = datasets.load_dataset(name, config, split=split)
    for index, row in enumerate(dataset):
        yield (f"{name}[{split}]", index, "row"), dict(row)
