"""The bm25s backend: the same BM25 as the Lucene backend without a JVM, on real indexes and a live server.

Checked against the real thing: Anserini's own analyzer (through pyserini's JVM) for the terms, and
the Lucene backend for the rankings. The numba scorer compiles once per environment (cached after:
agent_server.backends.bm25s_engine._scorer), which is most of this module's time on a clean machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from agent_server.backends.bm25 import BM25Retriever
from agent_server.backends.bm25s_engine import META, BM25sRetriever, build_bm25s_index
from agent_server.backends.lucene_analyzer import LuceneEnglishAnalyzer
from agent_server.embedded_indexes import ensure_index, load_retriever
from agent_server.index_cli import main as index_main
from search_env.answers import subem_check
from search_env.qa_data import load_qa
from tests.backend_fixtures import write_corpus
from tests.test_backends import check_backend_contract

# On the small world's 1,000 train questions bm25s gave Lucene's top-3, in order, for 99.9% (default
# world 99.98%, large 99.97%): Lucene quantises passage lengths to one byte, so near ties can swap.
MIN_TOP3_IDENTICAL = 0.97
MIN_TOP1_IDENTICAL = 0.99


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory, corpus: Path):
    retriever = BM25sRetriever(build_bm25s_index(corpus, tmp_path_factory.mktemp("bm25s") / "index", progress=False))
    yield retriever
    retriever.close()


@pytest.fixture(scope="module")
def lucene(bm25_server, small_world):
    """The small world's Lucene index (built by the session's bm25_server), searched in process."""
    retriever = BM25Retriever(ensure_index("bm25", small_world.corpus))
    yield retriever
    retriever.close()


@pytest.fixture(scope="module")
def fast_world(bm25s_server, small_world):
    retriever = load_retriever("bm25s", corpus=small_world.corpus)
    yield retriever
    retriever.close()


AWKWARD_TEXT = [
    "Who's the U.S. president in 1,000 B.C.?",
    "don't stop: 3.14 café naïve x-ray e-mail snake_case CamelCase",
    "Technology, biology and apology; the Rolling Stones' songs",
    'It is not the ANSWER... or is it? (AND OR NOT) [x] ~y* "quoted"',
    "running runs ran runner easily fairly hopeful generalizations possibly humbly",
    "x" * 600 + " 東京の一丁 Stones'",
]


def test_terms_are_anserinis_default_english_analysis(lucene, small_world) -> None:
    from pyserini.pyclass import autoclass

    analyzer = autoclass("io.anserini.analysis.DefaultEnglishAnalyzer").newDefaultInstance()
    analyze = autoclass("io.anserini.analysis.AnalyzerUtils").analyze
    ours = LuceneEnglishAnalyzer()
    passages = [json.loads(line)["contents"] for line in small_world.corpus.open()]
    for text in AWKWARD_TEXT + [" ".join(passages)]:
        assert ours.terms(text) == list(analyze(analyzer, text)), text[:200]


def test_bm25s_contract_and_ranking(fast, entries) -> None:
    check_backend_contract(fast, entries, [f"{e.name} {e.topic}" for e in entries])
    results = fast.search([e.name for e in entries], 3)  # all 300 in one batch
    assert [hits[0].id for hits in results] == [e.id for e in entries]
    assert len(fast) == len(entries)


def test_bm25s_matches_lucene_on_hits_scores_and_empty_queries(fast_world, lucene, small_world) -> None:
    queries = [r.question for r in load_qa(small_world.qa["dev"])][:200] + AWKWARD_TEXT
    queries += ["the of and", "zzqx unknownword", "?!"]  # stopwords only, unknown terms, no term: no hits
    found = list(zip(queries, lucene.search(queries, 10), fast_world.search(queries, 10), strict=True))
    for q, a, b in found:
        assert len(b) == len(a), q  # only passages sharing a term, as Lucene: none for the last three
        # Lucene stores passage lengths in one byte: its scores are within a few % of the exact ones.
        assert [h.score for h in b] == pytest.approx([h.score for h in a], rel=0.03), q
    assert sum([h.id for h in a[:3]] == [h.id for h in b[:3]] for _, a, b in found) >= MIN_TOP3_IDENTICAL * len(found)


def test_kernel_scores_bit_for_bit_as_bm25s_and_breaks_ties_by_id(fast_world, small_world) -> None:
    """Our kernel against bm25s's own (which scores every passage per query), run as bm25s runs it, on
    the small world's train questions and awkward term lists, batched (the parallel path, two workers)
    and one query a call."""
    import numpy as np
    from bm25s.numba.retrieve_utils import _compute_relevance_from_scores_jit_ready, _retrieve_internal_jitted

    r, s = fast_world, fast_world._engine.scores
    ids = r.store.ids()  # "0".."2018": the string order is not the row order
    assert [ids[row] for row in np.argsort(r._tie_rank)] == sorted(ids) != list(ids)
    questions = dict.fromkeys(q.question for q in load_qa(small_world.qa["train"]))
    queries = [ids for q in questions if (ids := [r._vocab[t] for t in r._analyzer.terms(q) if t in r._vocab])]
    df = np.diff(s["indptr"])
    rare, common = int(np.flatnonzero(df == 2)[0]), int(np.argmax(df))  # 2 passages (< k), the most
    many = list(range(0, len(df), len(df) // 400))  # 400 distinct terms: pruning's bounds the loosest
    assert df[many].sum() > len(r) > df[queries[0]].sum()  # the kernel's dense path, and its pruned one
    queries += [many, [common], [rare], [rare, common, rare, rare], queries[0] * 3, [common, common], [], [rare] * 4]
    pointers = np.cumsum([0] + [len(q) for q in queries], dtype=np.int32)
    flat = np.array([t for q in queries for t in q], dtype=np.int32)
    dense = [
        _compute_relevance_from_scores_jit_ready(s["data"], s["indptr"], s["indices"], len(r), q, np.float32)
        for q in (flat[a:b] for a, b in zip(pointers[:-1], pointers[1:], strict=True))
    ]
    for k in (1, 3, 10, 50):
        f32, i32 = np.dtype(np.float32), np.dtype(np.int32)
        theirs, their_rows = _retrieve_internal_jitted(
            flat, pointers, k, True, f32, i32, s["data"], s["indptr"], s["indices"], len(r), None, None
        )
        rows, scores = r._top_k(queries, k)
        assert scores.dtype == np.float32 and rows.shape == scores.shape == (len(queries), k)
        assert np.array_equal(scores.view(np.int32), theirs.view(np.int32)), k  # bit for bit
        for q, (row, score, their_row, full) in enumerate(zip(rows, scores, their_rows, dense, strict=True)):
            order = np.lexsort((r._tie_rank, -full))[:k]  # best first, ties by ascending id, as Anserini
            expected = np.where(full[order] > 0, order, -1)
            assert np.array_equal(row, expected), (k, queries[q])
            above = score > score[-1]  # bm25s orders ties at the k-th score arbitrarily
            assert set(row[above]) == set(their_row[above]), (k, queries[q])
        for q in (len(queries) - 5, len(queries) - 1, 0):  # one query a call: one worker
            one_rows, one_scores = r._top_k([queries[q]], k)
            assert np.array_equal(one_rows[0], rows[q]) and np.array_equal(one_scores[0], scores[q])
    assert (rows[-2] == -1).all() and (scores[-2] == 0).all()  # no term: no passage
    postings = s["indices"][s["indptr"][rare] : s["indptr"][rare + 1]]
    assert sorted(rows[-1][:2]) == sorted(postings) and (rows[-1][2:] == -1).all()  # fewer matches than k


def test_column_maxima_and_the_matrix_the_kernel_refuses(tmp_path) -> None:
    import numpy as np

    from agent_server.backends.bm25s_engine import _column_maxima

    data = np.array([0.5, 2.0, 1.0, 3.0], dtype=np.float32)  # terms: {}, {rows 1, 4}, {}, {0, 2}, {}
    indptr, indices = np.array([0, 0, 2, 2, 4, 4]), np.array([1, 4, 0, 2], dtype=np.int32)
    assert _column_maxima(data, indptr, indices, tmp_path).tolist() == [0, 2.0, 0, 3.0, 0]
    for bad in (
        (data, indptr, np.array([4, 1, 0, 2], dtype=np.int32)),  # rows not ascending in a column
        (np.array([0.5, 2.0, 0.0, 3.0], dtype=np.float32), indptr, indices),  # a zero score
        (data.astype(np.float64), indptr, indices),
    ):
        with pytest.raises(ValueError, match="ascending per term"):
            _column_maxima(*bad, tmp_path)


def test_bm25s_describe_and_index_cache(fast, corpus, tmp_path, entries) -> None:
    info = fast.describe()
    assert info["backend"] == "bm25s" and info["passages"] == 300 and info["method"] == "lucene"
    assert (info["k1"], info["b"]) == (0.9, 0.4) and info["corpus"] == str(corpus)
    json.dumps(info)
    small = write_corpus(tmp_path / "c.jsonl", entries[:30])
    first = ensure_index("bm25s", small, root=tmp_path)
    assert ensure_index("bm25s", small, root=tmp_path) == first and first.name.startswith("bm25s-")
    retriever = load_retriever("bm25s", corpus=small, root=tmp_path)
    try:
        assert len(retriever) == 30 and retriever.search([entries[3].name], 1)[0][0].id == entries[3].id
    finally:
        retriever.close()


def test_bm25s_index_command_and_bad_out_dir(tmp_path, capsys, entries) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", entries[:30])
    out = tmp_path / "bm25s"
    assert index_main(["index", "--backend", "bm25s", "--corpus", str(corpus), "--out", str(out)]) == 0
    assert "built BM25 (bm25s) index" in capsys.readouterr().out
    assert json.loads((out / META).read_text())["count"] == 30
    with pytest.raises(FileExistsError):
        build_bm25s_index(corpus, out)
    with pytest.raises(FileNotFoundError, match="no bm25s index"):
        BM25sRetriever(tmp_path)


# -- through a live server -----------------------------------------------------------------------------
def _post(server, body: dict) -> httpx.Response:
    return httpx.post(server.url + "/retrieve", json=body, timeout=60)


def test_server_answers_as_the_lucene_server(bm25s_server, bm25_server, small_world) -> None:
    records = list({r.question: r for r in load_qa(small_world.qa["train"])}.values())
    questions = [r.question for r in records]
    body = {"queries": questions, "topk": 3, "return_scores": True}
    lucene, fast = _post(bm25_server, body).json(), _post(bm25s_server, body).json()
    assert list(fast) == ["result"] and len(fast["result"]) == len(questions)
    for row in fast["result"][:50]:
        assert [list(item) for item in row] == [["document", "score"]] * 3
        assert all(isinstance(item["score"], float) and list(item["document"]) == ["id", "contents"] for item in row)
    ids = [[[item["document"]["id"] for item in row] for row in r["result"]] for r in (lucene, fast)]
    pairs = list(zip(*ids, strict=True))
    assert sum(a[:1] == b[:1] for a, b in pairs) / len(pairs) >= MIN_TOP1_IDENTICAL
    assert sum(a == b for a, b in pairs) / len(pairs) >= MIN_TOP3_IDENTICAL

    def answered(result: dict) -> int:
        rows = [" ".join(item["document"]["contents"] for item in row) for row in result["result"]]
        return sum(subem_check(text, r.golden_answers) for text, r in zip(rows, records, strict=True))

    assert abs(answered(fast) - answered(lucene)) <= 0.01 * len(records)
    info = httpx.get(bm25s_server.url + "/info").json()
    assert info["backend"]["backend"] == "bm25s" and info["passages"] == sum(1 for _ in small_world.corpus.open())


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"topk": 3}, 422, "exactly one of 'queries'"),
        ({"queries": ["x"], "topk": 101}, 422, "topk must be between 1 and 100"),
        ({"queries": ["q"] * 5000}, 422, "too many queries in one request"),
    ],
)
def test_server_refuses_bad_input_as_bm25_does(bm25s_server, body, status, message) -> None:
    r = _post(bm25s_server, body)
    assert r.status_code == status and message in r.json()["detail"]


def test_server_repairs_awkward_queries_and_answers_no_term_with_no_hits(bm25s_server) -> None:
    long_query = " ".join(f"w{i}" for i in range(1500)) + " river"  # over 4,096 characters: cut
    r = _post(bm25s_server, {"queries": ["?!", "the of", long_query, "x" * 5000, "  "], "topk": 3})
    assert r.status_code == 200, r.text
    result = r.json()["result"]
    assert result[0] == result[1] == result[4] == [] and "errors" not in r.json()
    assert httpx.get(bm25s_server.url + "/info").json()["awkward_queries"]["cut"] >= 2  # the two long ones
