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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

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
) -> list[QARecord]:
    """Load QA records from a local file, a folder holding `<split>.jsonl`/`.parquet`, or a HF data set.

    A local `.jsonl`, `.json`, `.jsonl.gz` or `.parquet` file is read as is (`split` and `config` are
    ignored). Anything that is not an existing path and has no such suffix is taken as a Hugging Face
    data set name and loaded by `datasets.load_dataset(source, config, split=split or "train")`.
    Raises ValueError naming the file and line (or row) of a record without a question or an answer.
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
    for index, (where, row) in enumerate(rows):
        if limit is not None and index >= limit:
            break
        records.append(to_qa_record(row, where=where, index=index))
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


def to_qa_record(row: dict[str, Any], where: str = "<record>", index: int = 0) -> QARecord:
    """Map one raw record of any accepted shape to a QARecord; `where` names it in errors."""
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a QA record must be a JSON object, got {type(row).__name__}")
    question = _question_of(row)
    if not question:
        raise ValueError(f"{where}: record has no question")
    answers = _answers_of(row)
    if not answers:
        raise ValueError(f"{where}: record has no gold answer")
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
    for suffix in (".jsonl", ".jsonl.gz", ".json", ".parquet"):
        candidate = folder / f"{split}{suffix}"
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"no {split}.jsonl / .json / .parquet in {folder}")


def _iter_json_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        text = handle.read()
    stripped = text.lstrip()
    if path.name.lower().endswith((".json", ".json.gz")) and stripped.startswith("["):
        # A JSON array file (one document); errors name the array index.
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        for index, row in enumerate(rows):
            yield f"{path} item {index}", row
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: not a JSON record ({err})") from err
        yield f"{path}:{lineno}", row


def _iter_parquet_rows(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(f"reading {path} needs pyarrow: pip install searchgym[data]") from err
    parquet = pq.ParquetFile(path)
    row_index = 0
    for batch in parquet.iter_batches(batch_size=4096):
        for row in batch.to_pylist():
            yield f"{path} row {row_index}", row
            row_index += 1


def _iter_hf_rows(name: str, config: str | None, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"{name!r} is not a local .jsonl/.json/.parquet file, and loading it as a Hugging Face "
            "data set needs `datasets`: pip install searchgym[data]"
        ) from err
    dataset = datasets.load_dataset(name, config, split=split)
    for index, row in enumerate(dataset):
        yield f"{name}[{split}] row {index}", dict(row)
