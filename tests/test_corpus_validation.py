"""A bad corpus or QA line is named (file, line, what is wrong) before any backend indexes it, and
`--skip-bad-lines` indexes the rest: real pyserini (Lucene) and faiss builds of a 26-line corpus whose
line 21 is `not json at all`, as issue 14 reported it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from agent_server.backends.bm25 import BM25Retriever, build_bm25_index
from agent_server.backends.dense import DenseRetriever, build_dense_index
from agent_server.index_cli import main as index_main
from search_env.bad_records import BadRecordError
from search_env.corpus_validation import validate_corpus
from search_env.qa_data import load_qa
from tests.backend_fixtures import make_entries


def _good_lines(n: int) -> list[str]:
    return [json.dumps({"id": e.id, "contents": e.contents}) for e in make_entries(n)]


def _corpus(path: Path, bad: str, before: int = 20, after: int = 5) -> Path:
    """`before` good lines, the bad line, `after` good lines (ids 1..before+after)."""
    good = _good_lines(before + after)
    path.write_text("\n".join([*good[:before], bad, *good[before:]]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("not json at all", "not JSON"),
        ('{"id": "x1", "title": "T", "text": "t"}', "no `contents` field (it has title/text"),
        ('{"id": "x1", "contents": "   "}', "`contents` is empty"),
        ('{"id": "x1", "contents": ["a"]}', "`contents` is an array, not a string"),
        ('{"id": null, "contents": "T"}', "`id` is null, not a string"),
        ('{"id": "3", "contents": "again"}', "duplicate id '3' (first on line 3)"),
        ("[1, 2]", "not an object with `id` and `contents` (an array)"),
    ],
)
def test_the_error_names_file_line_and_fault(tmp_path: Path, bad: str, reason: str) -> None:
    path = _corpus(tmp_path / "c.jsonl", bad)
    with pytest.raises(BadRecordError) as err:
        validate_corpus(path)
    assert (err.value.path, err.value.line) == (str(path), 21)
    assert str(err.value).startswith(f"{path}:21: {reason}")
    check = validate_corpus(path, skip_bad_lines=True)
    assert (check.passages, check.bad_lines) == (25, (21,))


def test_invalid_utf8_blank_lines_gzip_and_integer_ids(tmp_path: Path) -> None:
    good = _good_lines(4)
    path = tmp_path / "c.jsonl.gz"
    body = "\n".join([good[0], "", good[1]]).encode() + b'\n{"id": "9", "contents": "caf\xe9"}\n'
    body += (json.dumps({"id": 77, "contents": '"T"\nint id'}) + "\n").encode()
    path.write_bytes(gzip.compress(body))
    with pytest.raises(BadRecordError, match=r"c\.jsonl\.gz:4: not UTF-8 \(byte 0xe9"):
        validate_corpus(path)
    check = validate_corpus(path, skip_bad_lines=True)
    assert (check.passages, check.blank_lines, check.bad_lines) == (3, 1, (4,))
    assert check.needs_copy  # the integer id is written as a string for pyserini


def test_cli_bm25_names_line_21_and_skip_builds_the_rest(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = _corpus(tmp_path / "corpus.jsonl", "not json at all")
    with pytest.raises(SystemExit) as exit_:
        index_main(["index", "--backend", "bm25", "--corpus", str(corpus), "--out", str(tmp_path / "bm25")])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"agent-server index: bad corpus line: {corpus}:21: not JSON (Expecting value at column 1): "
        "'not json at all' (--skip-bad-lines indexes the rest)"
    ]
    assert not (tmp_path / "bm25").exists()

    out = tmp_path / "bm25-skip"
    argv = ["index", "--backend", "bm25", "--corpus", str(corpus), "--out", str(out), "--skip-bad-lines"]
    assert index_main(argv) == 0
    captured = capsys.readouterr()
    assert "1 bad line(s) skipped (first: " in captured.err and f"{corpus}:21: not JSON" in captured.err
    assert "(25 passages, 1 bad line(s) skipped)" in captured.out
    retriever = BM25Retriever(out, threads=1)
    try:
        assert len(retriever) == 25
        after = make_entries(25)[20]  # the first passage after the bad line
        hit = retriever.search([after.name], 1)[0][0]
        assert (hit.id, hit.contents) == (after.id, after.contents)
    finally:
        retriever.close()


def test_dense_names_line_21_and_skip_reads_a_clean_store(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus.jsonl", "not json at all")
    with pytest.raises(BadRecordError, match=r"corpus\.jsonl:21: not JSON"):
        build_dense_index(corpus, tmp_path / "dense", progress=False)
    out = build_dense_index(corpus, tmp_path / "dense-skip", progress=False, skip_bad_lines=True)
    retriever = DenseRetriever(out, corpus=corpus)  # the user's corpus opens the store of its clean copy
    try:
        assert len(retriever) == 25 and json.loads((out / "meta.json").read_text())["skipped_lines"] == 1
        entries = make_entries(25)
        hits = retriever.search([entries[20].contents, entries[24].contents], 1)
        assert [h[0].id for h in hits] == [entries[20].id, entries[24].id]
        assert hits[1][0].contents == entries[24].contents
    finally:
        retriever.close()


def test_a_line_without_contents_is_named_for_both_backends(tmp_path: Path) -> None:
    corpus = _corpus(tmp_path / "corpus.jsonl", '{"id": "x", "text": "no contents"}')
    with pytest.raises(BadRecordError, match=r"corpus\.jsonl:21: no `contents` field"):
        build_bm25_index(corpus, tmp_path / "bm25")
    with pytest.raises(BadRecordError, match=r"corpus\.jsonl:21: no `contents` field"):
        build_dense_index(corpus, tmp_path / "dense", progress=False)
    assert not (tmp_path / "bm25").exists() and not (tmp_path / "dense").exists()


def test_qa_lines_are_named_and_can_be_skipped(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    good = [json.dumps({"id": str(i), "question": f"q{i}?", "golden_answers": [f"a{i}"]}) for i in range(6)]
    lines = [*good[:3], '{"question": "no answer?", "golden_answers": []}', "oops", *good[3:]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(BadRecordError, match=r"qa\.jsonl:4: record has no gold answer"):
        load_qa(path)
    records = load_qa(path, skip_bad_lines=True)
    assert [r.id for r in records] == [str(i) for i in range(6)]
    path.write_text(json.dumps({"question": 7, "golden_answers": ["x"]}) + "\n", encoding="utf-8")
    with pytest.raises(BadRecordError, match=r"qa\.jsonl:1: record has no question \(`question` is int '7'\)"):
        load_qa(path)


def test_qa_parquet_rows_are_named(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path = tmp_path / "qa.parquet"
    pq.write_table(pa.table({"question": ["q0?", "", "q2?"], "golden_answers": [["a"], ["b"], ["c"]]}), path)
    with pytest.raises(BadRecordError, match=r"qa\.parquet row 1: record has no question"):
        load_qa(path)
    assert [r.question for r in load_qa(path, skip_bad_lines=True)] == ["q0?", "q2?"]
