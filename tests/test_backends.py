"""The retrieval backends on real indexes built from a small fictional corpus: BM25 (pyserini/Lucene),
dense (faiss + the packaged MiniLM), hybrid (RRF), the index cache and the `index` command.

Each index is built once per module; dense builds encode ~300 short passages (a few seconds each).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_server.backends.base import Hit
from agent_server.backends.bm25 import BM25Retriever, _passage_of_raw, build_bm25_index
from agent_server.backends.dense import BLAS_FROM_QUERIES, DenseRetriever, build_dense_index
from agent_server.backends.hybrid import HybridRetriever
from agent_server.embedded_indexes import ensure_index, load_retriever
from agent_server.encoder import DEFAULT_ENCODER, Encoder, load_encoder
from agent_server.index_cli import main as index_main
from agent_server.passage_store import CorpusChangedError
from tests.backend_fixtures import Entry, make_entries, write_corpus

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bm25(tmp_path_factory: pytest.TempPathFactory, corpus: Path):
    index = build_bm25_index(corpus, tmp_path_factory.mktemp("bm25") / "index")
    retriever = BM25Retriever(index)
    yield retriever
    retriever.close()


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    # fp32 on every CPU: the contract's batch == single check holds scores to rel 1e-4, an fp32
    # tolerance; bf16-mixed (auto on an AMX CPU) moves them ~1e-3 with the batch (test_encode_precision).
    return load_encoder(dtype="fp32")


@pytest.fixture(scope="module")
def dense(tmp_path_factory: pytest.TempPathFactory, corpus: Path, encoder: Encoder):
    index = build_dense_index(corpus, tmp_path_factory.mktemp("dense") / "index", encoder, progress=False)
    retriever = DenseRetriever(index, encoder)
    yield retriever
    retriever.close()


def ids(hits: list[Hit]) -> list[str]:
    return [h.id for h in hits]


def check_backend_contract(retriever, entries: list[Entry], queries: list[str]) -> None:
    """k respected, blanks empty, and one batch equal to query-by-query search."""
    for k in (1, 3, 7):
        assert all(len(hits) == k for hits in retriever.search(queries[:5], k))
    mixed = retriever.search(["", queries[0], "   \n", queries[1]], 3)
    assert mixed[0] == [] and mixed[2] == [] and len(mixed[1]) == len(mixed[3]) == 3
    assert retriever.search(["  "], 5) == [[]] and retriever.search([], 5) == []
    batch = retriever.search(queries[:25], 5)
    for query, batched in zip(queries[:25], batch, strict=True):
        (single,) = retriever.search([query], 5)
        assert ids(single) == ids(batched)
        assert [h.score for h in single] == pytest.approx([h.score for h in batched], rel=1e-4)
    top = batch[0][0]
    assert isinstance(top, Hit) and top.contents == entries[0].contents and isinstance(top.score, float)


# -- BM25 -------------------------------------------------------------------------------------------------
def test_bm25_ranks_the_passage_of_its_distinctive_words_first(bm25, entries) -> None:
    results = bm25.search([e.name for e in entries], 3)  # all 300 in one batch
    assert [hits[0].id for hits in results] == [e.id for e in entries]
    assert len(bm25) == len(entries)


def test_bm25_contract(bm25, entries) -> None:
    check_backend_contract(bm25, entries, [f"{e.name} {e.topic}" for e in entries])
    # Lucene query syntax is not interpreted: a stray operator or bracket is just text.
    assert bm25.search(['what\'s "AND (OR) [x]? ' + entries[2].name], 2)[0][0].id == entries[2].id


def test_bm25_describe(bm25, corpus) -> None:
    info = bm25.describe()
    assert info["backend"] == "bm25" and info["passages"] == 300 and info["raw_docs"] is True
    assert info["k1"] == 0.9 and info["b"] == 0.4 and info["corpus"] == str(corpus)
    assert info["java"].startswith("21") and Path(info["index"]).is_dir()
    json.dumps(info)


def test_bm25_reads_passages_from_the_corpus_or_the_raw_docs_alike(bm25, entries, tmp_path) -> None:
    # Our index records its corpus: passages come from its PassageStore. A copy without our metadata
    # (as a prebuilt index) reads each hit's stored raw JSON instead; the answers are the same.
    assert bm25.describe()["passages_from"] == "corpus"
    prebuilt = tmp_path / "prebuilt"
    shutil.copytree(bm25.index_dir, prebuilt, ignore=shutil.ignore_patterns("searchgym-bm25.json"))
    raw = BM25Retriever(prebuilt)
    try:
        assert raw.describe()["passages_from"] == "raw docs"
        queries = [f"{e.name} {e.topic}" for e in entries[:40]] + ["", "lighthouse storms"]
        assert raw.search(queries, 5) == bm25.search(queries, 5)
    finally:
        raw.close()


def test_bm25_refuses_a_non_empty_out_dir(corpus, tmp_path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(FileExistsError):
        build_bm25_index(corpus, tmp_path / "taken")


def test_bm25_from_a_gzip_corpus_through_a_symlink(tmp_path, entries) -> None:
    corpus = write_corpus(tmp_path / "small.jsonl.gz", entries[:40])
    index = build_bm25_index(corpus, tmp_path / "index")
    retriever = BM25Retriever(index)
    try:
        assert len(retriever) == 40
        assert retriever.search([entries[39].name], 1)[0][0].contents == entries[39].contents
    finally:
        retriever.close()


def test_bm25_index_without_raw_docs_reads_passages_from_the_corpus(tmp_path, entries) -> None:
    # Like Search-R1's self-built indexes: the same indexer, without --storeRaw.
    string_ids = make_entries(60, id_of=lambda row: f"doc-{row:x}")
    (tmp_path / "input").mkdir()
    corpus = write_corpus(tmp_path / "input" / "corpus.jsonl", string_ids)
    subprocess.run(
        [sys.executable, "-m", "agent_server.lucene_indexer", "--collection", "JsonCollection",
         "--input", str(corpus.parent), "--index", str(tmp_path / "index"),
         "--generator", "DefaultLuceneDocumentGenerator", "--threads", "1", "--storePositions"],
        check=True, capture_output=True, cwd=REPO,
    )
    with pytest.raises(ValueError, match="stores no raw passages"):
        BM25Retriever(tmp_path / "index")
    retriever = BM25Retriever(tmp_path / "index", corpus=corpus)
    try:
        assert retriever.describe()["raw_docs"] is False
        top = retriever.search([string_ids[17].name], 2)[0][0]
        assert top == Hit(string_ids[17].id, string_ids[17].contents, top.score)
    finally:
        retriever.close()


def test_raw_docs_with_title_and_text_or_plain_text() -> None:
    assert _passage_of_raw('{"id": "7", "title": "Kora", "text": "A town."}') == ("7", '"Kora"\nA town.')
    assert _passage_of_raw('{"id": 3, "contents": "\\"T\\"\\nx"}') == ("3", '"T"\nx')
    assert _passage_of_raw("<DOC>not json</DOC>") == (None, "<DOC>not json</DOC>")


# -- dense ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_dense_ranks_the_described_passage_first(dense, entries) -> None:
    results = dense.search([f"{e.name} {e.topic}" for e in entries], 3)  # one encode, one faiss search
    assert [hits[0].id for hits in results] == [e.id for e in entries]
    assert len(dense) == len(entries)


@pytest.mark.slow
def test_dense_contract_and_describe(dense, entries, corpus) -> None:
    import faiss

    # Batches of BLAS_FROM_QUERIES+ queries take faiss's BLAS path, single queries its per-query loop:
    # the contract's batch == one-by-one check below compares the two.
    assert faiss.cvar.distance_compute_blas_threshold <= BLAS_FROM_QUERIES * 384 < len(entries) * 384
    check_backend_contract(dense, entries, [f"{e.name} {e.topic}" for e in entries])
    info = dense.describe()
    assert info["backend"] == "dense" and info["encoder"] == DEFAULT_ENCODER and info["dim"] == 384
    assert info["passages"] == 300 and info["index_type"] == "Flat" and info["corpus"] == str(corpus)
    meta = json.loads((dense.index_dir / "meta.json").read_text())
    assert meta["count"] == 300 and meta["corpus"]["size"] == corpus.stat().st_size
    assert meta["searchgym_version"] and meta["encode_passages_per_s"] > 0
    assert not (dense.index_dir / "embeddings.npy").exists()


@pytest.mark.slow
def test_dense_rejects_another_encoder_and_a_changed_corpus(dense, corpus, tmp_path) -> None:
    with pytest.raises(ValueError, match="built with encoder"):
        DenseRetriever(dense.index_dir, encoder="intfloat/e5-base-v2")
    changed = tmp_path / "changed.jsonl"
    changed.write_text(corpus.read_text() + json.dumps({"id": "301", "contents": "extra"}) + "\n")
    with pytest.raises(CorpusChangedError):
        DenseRetriever(dense.index_dir, dense.encoder, corpus=changed)


@pytest.mark.slow
@pytest.mark.parametrize("index_type, options", [("HNSW32", {"ef_search": 64}), ("IVF4,Flat", {"nprobe": 4})])
def test_dense_approximate_index_types(index_type, options, corpus, entries, encoder, tmp_path) -> None:
    index = build_dense_index(corpus, tmp_path / "index", encoder, index_type=index_type, progress=False)
    retriever = DenseRetriever(index, encoder, mmap=index_type.startswith("HNSW"), **options)
    results = retriever.search([f"{e.name} {e.topic}" for e in entries[:50]], 5)
    assert all(len(hits) == 5 for hits in results)
    top1 = sum(hits[0].id == e.id for hits, e in zip(results, entries, strict=False))
    assert top1 >= 48  # approximate, but on 300 vectors nearly exact
    assert retriever.describe()["index_type"] == index_type


def test_dense_bad_index_type_fails_before_encoding(corpus, encoder, tmp_path) -> None:
    with pytest.raises(ValueError, match="not a faiss index type"):
        build_dense_index(corpus, tmp_path / "index", encoder, index_type="Bogus99")


def test_encoder_prefixes_follow_search_r1() -> None:
    from agent_server.encoder import _prefixes

    assert _prefixes("intfloat/e5-base-v2") == ("query: ", "passage: ")
    assert _prefixes("BAAI/bge-small-en-v1.5")[0].startswith("Represent this sentence")
    assert _prefixes("/home/e5user/minilm") == ("", "")
    assert _prefixes(DEFAULT_ENCODER) == ("", "")


# -- hybrid -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_hybrid_fuses_both_rankings_by_reciprocal_rank(bm25, dense, entries) -> None:
    k = 10
    hybrid = HybridRetriever(bm25, dense, depth=k, rrf_k=60)
    # A lexical query (name words only one passage has) and a semantic one (no rare word at all).
    queries = [entries[4].name, "an old tower with a lamp that guides ships through storms"]
    fused = hybrid.search(queries, k)
    for query, hits in zip(queries, fused, strict=True):
        (lexical,) = bm25.search([query], k)
        (semantic,) = dense.search([query], k)
        expected: dict[str, float] = {}
        for ranking in (lexical, semantic):
            for rank, hit in enumerate(ranking, start=1):
                expected[hit.id] = expected.get(hit.id, 0.0) + 1 / (60 + rank)
        assert len(hits) == min(k, len(expected))
        assert [h.score for h in hits] == pytest.approx(sorted(expected.values(), reverse=True)[:k])
        assert all(h.score == pytest.approx(expected[h.id]) for h in hits)
        only_one_side = set(ids(lexical)) ^ set(ids(semantic))
        assert only_one_side & set(ids(hits))  # a passage only one side found still makes the list
    assert fused[0][0].id == entries[4].id  # first on both sides
    assert hybrid.search(["", queries[0]], 3)[0] == [] and len(hybrid.search([queries[0]], 3)[0]) == 3
    info = hybrid.describe()
    assert info["backend"] == "hybrid" and info["bm25"]["backend"] == "bm25" and info["dense"]["backend"] == "dense"


# -- the index cache, load_retriever and the `index` command ------------------------------------------------
@pytest.mark.slow
def test_ensure_index_builds_once_reuses_and_rebuilds_for_a_new_corpus(tmp_path, encoder) -> None:
    small = make_entries(40, seed=11)
    corpus = write_corpus(tmp_path / "world.jsonl", small)
    root = tmp_path / "home"
    first = ensure_index("bm25", corpus, root=root)
    started = time.perf_counter()
    again = ensure_index("bm25", corpus, root=root)
    assert again == first and time.perf_counter() - started < 0.2
    assert first.parent == root / "indexes" and first.name.startswith("bm25-")

    dense_dir = ensure_index("dense", corpus, encoder=encoder, root=root)
    assert ensure_index("dense", corpus, encoder=None, root=root) == dense_dir  # default encoder by name
    assert dense_dir.name.startswith("dense-") and dense_dir != first

    retriever = load_retriever("hybrid", corpus=corpus, encoder=encoder, root=root)
    try:
        assert retriever.name == "hybrid" and len(retriever) == 40
        assert retriever.describe()["bm25"]["index"] == str(first)
        assert retriever.search([small[9].name], 1)[0][0].id == small[9].id
    finally:
        retriever.close()

    write_corpus(corpus, small + make_entries(5, seed=99, id_of=lambda row: f"new-{row}"))
    rebuilt = ensure_index("bm25", corpus, root=root)
    assert rebuilt != first
    retriever = load_retriever("bm25", bm25_index=rebuilt)
    try:
        assert len(retriever) == 45
    finally:
        retriever.close()


def test_load_retriever_needs_an_index_or_a_corpus() -> None:
    with pytest.raises(ValueError, match="needs an index path or a corpus"):
        load_retriever("bm25")
    with pytest.raises(ValueError, match="backend"):
        load_retriever("sparse")  # type: ignore[arg-type]


def test_index_command_builds_and_reports(tmp_path, capsys, entries) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", entries[:30])
    assert index_main(["index", "--backend", "bm25", "--corpus", str(corpus), "--out", str(tmp_path / "bm25")]) == 0
    out = capsys.readouterr().out
    assert "built BM25 (Lucene) index" in out and str(tmp_path / "bm25") in out and " s" in out
    assert (tmp_path / "bm25" / "searchgym-bm25.json").is_file()


@pytest.mark.slow
def test_index_command_dense(tmp_path, capsys, entries) -> None:
    corpus = write_corpus(tmp_path / "c.jsonl", entries[:30])
    argv = ["index", "--backend", "dense", "--corpus", str(corpus), "--out", str(tmp_path / "dense"),
            "--index-type", "HNSW16", "--batch-size", "16"]
    assert index_main(argv) == 0
    assert "built dense (HNSW16" in capsys.readouterr().out
    assert json.loads((tmp_path / "dense" / "meta.json").read_text())["count"] == 30
