"""The bm25s backend's search kernel against bm25s's own, ms per query (issue 13, part 4).

Both kernels search the same bm25s index with the same term ids, one thread under 64 queries a batch,
`--threads` from 64 up, as the backend called each: bm25s's (`bm25s.numba.retrieve_utils.
_retrieve_internal_jitted`, compiled as the backend compiled it before: parallel, nogil, cached)
scores every passage per query, and was asked for top-3 + 32 candidates (its order among equal scores
is arbitrary; the backend re-sorted them by id); ours (BM25sRetriever._top_k, that is
agent_server.backends.bm25s_kernel) sums only the passages the query's terms touch, skips those that
cannot reach the top k (MaxScore), and breaks ties by id itself, so it is asked for top-3. Rounds
alternate the two over the same batches of distinct train questions; medians. Every round also checks
that the two give bit-identical top-3 scores.

    python benchmarks/bm25s_kernel.py --world large --batches 1,16,512
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_server.backends.bm25s_engine import _PARALLEL_MIN_QUERIES  # noqa: E402
from agent_server.embedded_indexes import load_retriever  # noqa: E402
from search_env.qa_data import load_qa  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402

TOPK = 3
BEFORE_TIE_CANDIDATES = 32  # what the backend asked bm25s's kernel for past k, for Anserini's tie order


def main() -> None:
    p = argparse.ArgumentParser(description="ms per query: our term-at-a-time kernel vs bm25s's own")
    p.add_argument("--world", default="large")
    p.add_argument("--batches", default="1,16,512", help="queries per call")
    p.add_argument("--queries", type=int, default=2048, help="distinct train questions timed per round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2, help="numba threads for batches of 64 and more")
    args = p.parse_args()
    import numba
    from bm25s.numba.retrieve_utils import _retrieve_internal_jitted

    paths = ensure_world(args.world)
    r = load_retriever("bm25s", corpus=paths.corpus, threads=args.threads)
    theirs = numba.njit(parallel=True, nogil=True, cache=True)(_retrieve_internal_jitted)
    s = r._engine.scores
    questions = list(dict.fromkeys(q.question for q in load_qa(paths.qa["train"])))
    term_ids = [ids for q in questions if (ids := [r._vocab[t] for t in r._analyzer.terms(q) if t in r._vocab])]
    term_ids = term_ids[: args.queries]

    def call(kernel: str, batch: list[list[int]]) -> np.ndarray:
        if kernel == "ours":  # the backend's own call (flattening the batch as below, scratch kept)
            return r._top_k(batch, TOPK)[1]
        threads = min(args.threads if len(batch) >= _PARALLEL_MIN_QUERIES else 1, numba.config.NUMBA_NUM_THREADS)
        numba.set_num_threads(threads)
        pointers = np.cumsum([0] + [len(ids) for ids in batch], dtype=np.int32)
        flat = np.fromiter((t for ids in batch for t in ids), dtype=np.int32, count=int(pointers[-1]))
        i32, f32 = np.dtype(np.int32), np.dtype(np.float32)
        data, indptr, indices = s["data"], s["indptr"], s["indices"]
        k = TOPK + BEFORE_TIE_CANDIDATES
        return theirs(flat, pointers, k, True, f32, i32, data, indptr, indices, s["num_docs"], None, None)[0]

    call("bm25s", term_ids[:64])  # compile or load both
    call("ours", term_ids[:64])
    times: dict[tuple[int, str], list[float]] = {}
    for size in (int(b) for b in args.batches.split(",")):
        batches = [term_ids[i : i + size] for i in range(0, len(term_ids), size)]
        for _ in range(args.rounds):
            got: dict[str, list[np.ndarray]] = {}
            for kernel in ("bm25s", "ours"):
                began = time.perf_counter()
                got[kernel] = [call(kernel, b) for b in batches]
                times.setdefault((size, kernel), []).append((time.perf_counter() - began) / len(term_ids))
            for a, b in zip(got["bm25s"], got["ours"], strict=True):
                assert np.array_equal(a[:, :TOPK].view(np.int32), b.view(np.int32)), "the kernels' scores differ"
    table = Table(title=f"{args.world} ({len(r):,} passages): ms per query, top-{TOPK}, median of {args.rounds} rounds")
    for col in ("queries per call", f"bm25s kernel (k={TOPK + BEFORE_TIE_CANDIDATES})", f"ours (k={TOPK})", "speed-up"):
        table.add_column(col, justify="right")
    for size in (int(b) for b in args.batches.split(",")):
        before, after = (statistics.median(times[size, kernel]) * 1000 for kernel in ("bm25s", "ours"))
        table.add_row(str(size), f"{before:.4f}", f"{after:.4f}", f"{before / after:.1f}x")
    Console(width=120).print(table)
    r.close()


if __name__ == "__main__":
    main()
