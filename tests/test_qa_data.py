"""QA loading: FlashRAG JSONL, Search-R1 verl parquet, plain answer fields, errors and limits."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from search_env.qa_data import QARecord, load_qa, to_qa_record, write_qa_jsonl

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

# Search-R1's base template (scripts/data_process/nq_search.py), abridged in the middle.
SEARCH_R1_PREFIX = (
    "Answer the given question. You must conduct reasoning inside <think> and </think> first every "
    "time you get new information. ... For example, <answer> Beijing </answer>. Question: "
)

FLASHRAG_ROWS = [
    {"id": "train_0", "question": "who wrote the ashen lattice?", "golden_answers": ["Varen Tolkas"],
     "metadata": {"hops": 1}},
    {"id": "train_1", "question": "when was korvath founded?", "golden_answers": ["1402", "in 1402"],
     "metadata": {}},
]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_flashrag_records(tmp_path: Path) -> None:
    records = load_qa(_write_jsonl(tmp_path / "train.jsonl", FLASHRAG_ROWS))
    assert records == [
        QARecord(id="train_0", question="who wrote the ashen lattice?", golden_answers=["Varen Tolkas"],
                 metadata={"hops": 1}),
        QARecord(id="train_1", question="when was korvath founded?", golden_answers=["1402", "in 1402"]),
    ]


def test_jsonl_gz_and_json_array_and_folder(tmp_path: Path) -> None:
    gz = tmp_path / "dev.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in FLASHRAG_ROWS)
    assert [r.id for r in load_qa(gz)] == ["train_0", "train_1"]

    array = tmp_path / "test.json"
    array.write_text(json.dumps(FLASHRAG_ROWS), encoding="utf-8")
    assert [r.id for r in load_qa(array)] == ["train_0", "train_1"]

    # A folder plus a split picks <split>.jsonl(.gz) / .json / .parquet.
    assert [r.id for r in load_qa(tmp_path, split="dev")] == ["train_0", "train_1"]


def test_plain_answer_fields_and_missing_id(tmp_path: Path) -> None:
    rows = [
        {"question": "q0", "answer": "single"},
        {"question": "q1", "answers": ["x", "y", "x", ""]},
        {"question": "q2", "answer": {"value": "Paris", "aliases": ["paris, france"]}},
        {"question": "q3", "answer": 1874},
    ]
    records = load_qa(_write_jsonl(tmp_path / "plain.jsonl", rows))
    assert [r.golden_answers for r in records] == [["single"], ["x", "y"], ["Paris", "paris, france"],
                                                    ["1874"]]
    assert [r.id for r in records] == ["0", "1", "2", "3"]  # row index when a record has no id


def test_limit(tmp_path: Path) -> None:
    rows = [{"id": str(i), "question": f"q{i}", "golden_answers": ["a"]} for i in range(10)]
    rows.append({"id": "bad", "question": "no answers here"})  # past the limit: never read
    path = _write_jsonl(tmp_path / "many.jsonl", rows)
    assert [r.id for r in load_qa(path, limit=3)] == ["0", "1", "2"]
    assert load_qa(path, limit=0) == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"id": "x", "golden_answers": ["a"]}, "no question"),
        ({"id": "x", "question": "  ", "golden_answers": ["a"]}, "no question"),
        ({"id": "x", "question": "q"}, "no gold answer"),
        ({"id": "x", "question": "q", "golden_answers": []}, "no gold answer"),
        ({"id": "x", "question": "q", "golden_answers": [None, ""]}, "no gold answer"),
    ],
)
def test_bad_record_names_file_and_line(tmp_path: Path, bad: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(FLASHRAG_ROWS[0]) + "\n\n" + json.dumps(bad) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bad\.jsonl:3: .*{message}"):
        load_qa(path)


def test_invalid_json_line_names_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(FLASHRAG_ROWS[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl:2"):
        load_qa(path)


def test_missing_local_file_is_not_taken_for_a_hub_name(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_qa(tmp_path / "absent.jsonl")
    with pytest.raises(FileNotFoundError):
        load_qa(tmp_path / "absent.parquet")


def _verl_row(index: int, question: str | None, targets: list[str]) -> dict:
    row = {
        "data_source": "nq",
        "prompt": [{"role": "user", "content": f"{SEARCH_R1_PREFIX}{question or 'recovered question?'}\n"}],
        "ability": "fact-reasoning",
        "reward_model": {"style": "rule", "ground_truth": {"target": targets}},
        "extra_info": {"split": "train", "index": index},
    }
    if question is not None:
        row["question"] = question
    return row


def test_parquet_verl_shape(tmp_path: Path) -> None:
    rows = [_verl_row(0, "who founded quorvane industries?", ["Mira Solt"]),
            _verl_row(1, "where is korvath?", ["Elandria", "Morvia"])]
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    records = load_qa(path)
    assert [r.question for r in records] == ["who founded quorvane industries?", "where is korvath?"]
    assert [r.golden_answers for r in records] == [["Mira Solt"], ["Elandria", "Morvia"]]
    assert [r.id for r in records] == ["0", "1"]
    assert {r.data_source for r in records} == {"nq"}
    assert records[1].metadata["extra_info"] == {"split": "train", "index": 1}


def test_parquet_verl_without_question_column_uses_the_prompt(tmp_path: Path) -> None:
    path = tmp_path / "test.parquet"
    pq.write_table(pa.Table.from_pylist([_verl_row(7, None, ["x"])]), path)
    (record,) = load_qa(path)
    # The templated instructions are cut away: only the text after "Question:" remains.
    assert record.question == "recovered question?"
    assert record.id == "7"


def test_parquet_flashrag_shape_and_bad_row(tmp_path: Path) -> None:
    path = tmp_path / "flash.parquet"
    pq.write_table(pa.Table.from_pylist(FLASHRAG_ROWS), path)
    assert [r.golden_answers for r in load_qa(path)] == [["Varen Tolkas"], ["1402", "in 1402"]]

    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([*FLASHRAG_ROWS, {"id": "2", "question": "q", "golden_answers": []}]),
                   bad)
    with pytest.raises(ValueError, match=r"bad\.parquet row 2: record has no gold answer"):
        load_qa(bad)
    assert len(load_qa(bad, limit=2)) == 2


def test_write_then_load_round_trip(tmp_path: Path) -> None:
    records = [QARecord(id="a", question="Qu\u00e9?", golden_answers=["x", "y"], data_source="s",
                        metadata={"hops": 2, "supporting_passages": ["3", "9"]})]
    for name in ("out/qa.jsonl", "out/qa.jsonl.gz"):
        path = write_qa_jsonl(records, tmp_path / name)
        assert load_qa(path) == records
    assert "Qu\u00e9" in (tmp_path / "out/qa.jsonl").read_text(encoding="utf-8")  # written as UTF-8


def test_to_qa_record_rejects_non_objects() -> None:
    with pytest.raises(ValueError, match="here: a QA record must be a JSON object"):
        to_qa_record(["not", "a", "dict"], where="here")  # type: ignore[arg-type]
