"""Where a BM25 query's time goes, per query, in process and through our server (issue 13, part 4).

For each world (default 22k passages, large 222k) and each engine (bm25: Lucene via pyserini; bm25s),
each world in its own process (`--worlds` one at a time) for a cold JVM,
batches of `--batch` distinct train questions, top-3 with scores as benchmarks/retrieval.py asks:

  in process, each stage of one backend call timed on its own (ms per query, median over batches):
    bm25 : java lists (queries into Java ArrayLists), lucene search (Anserini batch_search: BM25
           scoring + the stored-document read of each hit, both in Java), hits to Python (the JNI
           calls that read each query's hits and each hit's docid and score), passage fetch (the
           batch's passages from the corpus's PassageStore by docid), assembly (Hit);
    bm25-raw: the same before this profile: hits to Python also reads each hit's raw JSON through
           pyjnius (a Document proxy per hit), assembly parses it (in process only: same server code);
    bm25s: analysis (Lucene-style terms -> ids), bm25s search (numba scores + top-k), passage fetch
           (PassageStore rows -> passages), assembly (Hit, tie order);
    both : json encoding (the route's dicts and JSONResponse rendering of the whole batch);
  JVM warm-up: ms per query of the first batch after load, against the same after `--warm-up` queries;
  through our server (`agent-server retriever`, cache off): wall and server CPU per query of sequential
  POSTs of one batch, and what that adds to the in-process total (HTTP, request parsing, validation,
  query sanitising, coalescer, thread hop).

    python benchmarks/bm25_profile.py --worlds default,large
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_server.backends.base import Hit  # noqa: E402
from agent_server.embedded_indexes import load_retriever  # noqa: E402
from benchmarks.retrieval import _post, cpu_seconds  # noqa: E402
from search_env.qa_data import load_qa  # noqa: E402
from search_env.server_process import ServerProcess  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402

TOPK = 3
console = Console(width=150)


def _timed(stages: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    out = fn()
    stages[name] = stages.get(name, 0.0) + time.perf_counter() - began
    return out


def _encode(rows: list[list[Hit]]) -> bytes:
    from fastapi.responses import JSONResponse

    from agent_server.retrieval.routes import _format

    return JSONResponse({"result": _format(rows, True)}).body


def lucene_stages(r: Any, queries: list[str], stages: dict[str, float]) -> list[list[Hit]]:
    """BM25Retriever.search, split into its stages (same calls, same order); without a passage store
    (`bm25-raw`: the code before this profile) each hit's raw JSON is read through pyjnius."""
    from agent_server.backends.bm25 import _passage_of_raw

    def lists() -> tuple[Any, Any]:
        jq, jids = r._array_list(), r._array_list()
        for i, q in enumerate(queries):
            jq.add(q)
            jids.add(str(i))
        return jq, jids

    jq, jids = _timed(stages, "java lists", lists)
    found = _timed(stages, "lucene search", lambda: r._searcher.batch_search(jq, jids, TOPK, int(r.threads)))
    if r._store is None:
        raw = _timed(
            stages,
            "hits to python (JNI)",
            lambda: [
                [(h.docid, h.lucene_document.get("raw"), h.score) for h in (found.get(str(i)) or [])]
                for i in range(len(queries))
            ],
        )

        def assemble_raw() -> list[list[Hit]]:
            rows = []
            for hits in raw:
                row = []
                for docid, text, score in hits:
                    raw_id, contents = _passage_of_raw(text)
                    row.append(Hit(raw_id or docid, contents, float(score)))
                rows.append(row)
            return rows

        return _timed(stages, "assembly", assemble_raw)
    scored = _timed(
        stages,
        "hits to python (JNI)",
        lambda: [[(h.docid, float(h.score)) for h in found.get(str(i)) or []] for i in range(len(queries))],
    )
    passages = _timed(stages, "passage fetch", lambda: r._store.get_ids([d for hits in scored for d, _ in hits]))

    def assemble() -> list[list[Hit]]:
        it = iter(passages)
        return [
            [Hit(p.id, p.contents, score) for (_, score), p in zip(hits, [next(it) for _ in hits], strict=True)]
            for hits in scored
        ]

    return _timed(stages, "assembly", assemble)


def bm25s_stages(r: Any, queries: list[str], stages: dict[str, float]) -> list[list[Hit]]:
    """BM25sRetriever.search, split into its stages (every query here has indexed terms)."""
    import numpy as np

    def analyse() -> list[list[int]]:
        return [[r._vocab[t] for t in r._analyzer.terms(q) if t in r._vocab] for q in queries]

    ids = _timed(stages, "analysis", analyse)
    assert all(ids), "a query without indexed terms: this copy of search() assumes none"
    rows, scores = _timed(stages, "bm25s search", lambda: r._top_k(ids, TOPK))

    def fetch() -> tuple[Any, dict[int, Any]]:
        keep = scores > 0
        found = np.unique(rows[keep])
        return keep, dict(zip(found.tolist(), r.store.get_rows(found), strict=True))

    keep, passages = _timed(stages, "passage fetch", fetch)

    def assemble() -> list[list[Hit]]:
        return [
            [
                Hit(passages[x].id, passages[x].contents, s)
                for x, s, kept in zip(row_ids, row_scores, row_keep, strict=True)
                if kept
            ]
            for row_ids, row_scores, row_keep in zip(rows.tolist(), scores.tolist(), keep.tolist(), strict=True)
        ]

    return _timed(stages, "assembly", assemble)


def in_process(engine: str, corpus: Path, batches: list[list[str]], warm_up: list[str]) -> dict[str, float]:
    began = time.perf_counter()
    r = load_retriever("bm25s" if engine == "bm25s" else "bm25", corpus=corpus)
    if engine == "bm25-raw":
        r._store = None  # the raw-document path, as before this profile
    out: dict[str, float] = {"load s": time.perf_counter() - began}
    staged = bm25s_stages if engine == "bm25s" else lucene_stages
    n = len(batches[0])
    t0 = time.perf_counter()
    r.search(batches[0], TOPK)
    out["first batch after load"] = (time.perf_counter() - t0) / n
    for start in range(0, len(warm_up), 512):
        r.search(warm_up[start : start + 512], TOPK)
    t0 = time.perf_counter()
    r.search(batches[0], TOPK)
    out["same batch after warm-up"] = (time.perf_counter() - t0) / n
    per_batch: list[dict[str, float]] = []
    for queries in batches[1:]:
        stages: dict[str, float] = {}
        rows = staged(r, queries, stages)
        _timed(stages, "json encoding", lambda rows=rows: _encode(rows))
        assert rows == r.search(queries, TOPK), "the staged copy drifted from the backend's search"
        per_batch.append({k: v / n for k, v in stages.items()})
    for key in per_batch[0]:
        out[key] = statistics.median(b[key] for b in per_batch)
    out["in-process total"] = sum(out[k] for k in per_batch[0])
    r.close()
    return out


def via_server(engine: str, world: str, batches: list[list[str]], warm_up: list[str], log: Path) -> dict[str, float]:
    proc = ServerProcess(
        ["retriever", "--backend", engine, "--world", world, "--threads", "1", "--cache-size", "0"], log
    )
    proc.start().wait_ready(timeout=1800)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=600)
        for start in range(0, len(warm_up), 512):
            _post(conn, warm_up[start : start + 512])
        walls, cpus = [], []
        for queries in batches[1:]:
            cpu0, t0 = cpu_seconds(proc.proc.pid), time.perf_counter()  # type: ignore[union-attr]
            _post(conn, queries)
            walls.append((time.perf_counter() - t0) / len(queries))
            cpus.append((cpu_seconds(proc.proc.pid) - cpu0) / len(queries))  # type: ignore[union-attr]
        conn.close()
    finally:
        proc.stop()
    return {"server wall": statistics.median(walls), "server CPU": statistics.median(cpus)}


def main() -> None:
    p = argparse.ArgumentParser(description="per-query BM25 time by stage, in process and through our server")
    p.add_argument("--worlds", default="default,large")
    p.add_argument("--engines", default="bm25-raw,bm25,bm25s", help="bm25-raw: Lucene, passages from raw docs")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--batches", type=int, default=6, help="timed batches (the first is the cold one)")
    p.add_argument("--warm-up", type=int, default=20_000, help="queries searched before the timed batches")
    p.add_argument("--no-server", action="store_true", help="in process only")
    p.add_argument("--log-dir", type=Path, default=Path("runs/bench-bm25-profile"))
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, dict[str, float]] = {}
    for world in args.worlds.split(","):
        paths = ensure_world(world)
        questions = list(dict.fromkeys(r.question for r in load_qa(paths.qa["train"])))
        need = args.batch * args.batches
        batches = [questions[i : i + args.batch] for i in range(0, need, args.batch)]
        # Tagged so no measured query is among them (and a cache, were it on, would hold none).
        warm = [f"{q} warm-up" for q in (questions * (args.warm_up // len(questions) + 1))[need : need + args.warm_up]]
        for engine in args.engines.split(","):
            console.print(f"{world} / {engine} ...")
            column = in_process(engine, paths.corpus, batches, warm)
            if not args.no_server and engine != "bm25-raw":
                column |= via_server(engine, world, batches, warm, args.log_dir / f"{world}-{engine}.log")
                column["server adds (wall - in-process total)"] = column["server wall"] - column["in-process total"]
            figures[f"{world} {engine}"] = column
    table = Table(title=f"BM25 per query (ms), batches of {args.batch}, top-{TOPK} with scores, medians")
    table.add_column("stage")
    for name in figures:
        table.add_column(name, justify="right")
    keys = list(dict.fromkeys(k for col in figures.values() for k in col))
    for key in keys:
        cells = [figures[n].get(key) for n in figures]
        scale = 1 if key == "load s" else 1000
        table.add_row(key, *("" if c is None else f"{c * scale:.3f}" for c in cells))
    console.print(table)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
