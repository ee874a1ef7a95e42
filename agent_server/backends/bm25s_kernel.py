"""Term-at-a-time BM25 top-k over a bm25s score matrix: only the passages a query's terms touch.

bm25s 0.3's own kernel (`bm25s.numba.retrieve_utils._retrieve_internal_jitted`) allocates a dense
score array of every passage per query, scatter-adds the query terms' columns into it and runs a heap
over the whole array: O(passages) per query whatever the query (at 222k passages that scan was ~70% of
the search thread's time). This one is classic term-at-a-time accumulation (Turtle & Flood, 1995):
one accumulator of the corpus size per worker, kept across calls and reset only where a query
touched it, then a bounded heap over the touched passages only.

The scores are bit-identical to bm25s's: each passage's float32 sum starts at 0 and adds the query
terms' precomputed (term, passage) scores in the query's term order (a repeated term adds again), as
`bm25s.scoring._compute_relevance_from_scores_jit_ready` does. Ties are broken by ascending row
(bm25s's order among ties is arbitrary).

`search_top_k` is plain Python here; agent_server.backends.bm25s_engine._scorer compiles it with
numba (parallel, nogil, cached). The heap helpers are numba functions it calls.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(nogil=True)
def _worse(score_a: np.float32, row_a: np.int32, score_b: np.float32, row_b: np.int32) -> bool:
    """Whether (score_a, row_a) ranks after (score_b, row_b): lower score, or the same and a higher row."""
    return score_a < score_b or (score_a == score_b and row_a > row_b)


@njit(nogil=True)
def _sift_down(scores: np.ndarray, rows: np.ndarray, pos: int, length: int) -> None:
    """Restore the heap (worst at the root) below `pos` after its entry changed."""
    score, row = scores[pos], rows[pos]
    while True:
        child = 2 * pos + 1
        if child >= length:
            break
        right = child + 1
        if right < length and _worse(scores[right], rows[right], scores[child], rows[child]):
            child = right
        if not _worse(scores[child], rows[child], score, row):
            break
        scores[pos], rows[pos] = scores[child], rows[child]
        pos = child
    scores[pos], rows[pos] = score, row


@njit(nogil=True)
def _sift_up(scores: np.ndarray, rows: np.ndarray, pos: int) -> None:
    """Restore the heap (worst at the root) above `pos` after an entry was appended there."""
    score, row = scores[pos], rows[pos]
    while pos > 0:
        parent = (pos - 1) >> 1
        if not _worse(score, row, scores[parent], rows[parent]):
            break
        scores[pos], rows[pos] = scores[parent], rows[parent]
        pos = parent
    scores[pos], rows[pos] = score, row


def search_top_k(
    term_ids: np.ndarray,
    pointers: np.ndarray,
    k: int,
    data: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    acc: np.ndarray,
    touched: np.ndarray,
    workers: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k passages of each query of a batch, queries in parallel (prange over `workers`).

    term_ids: int32 (total terms,), the batch's term ids, query i's at pointers[i]:pointers[i + 1];
    pointers: int (queries + 1,); k: hits per query, 1 <= k <= passages; data / indices / indptr: the
    bm25s index's CSC matrix (float32 scores, int32 passage rows, int indptr over terms, as bm25s 0.3
    saves it), every stored score > 0 (Lucene's BM25: idf and tf part both positive); acc: float32
    (>= workers, passages), all 0, and left all 0; touched: int32 (>= workers, passages + 1), scratch.
    The caller keeps acc and touched across calls (one pair per calling thread), so a call costs
    nothing per passage untouched. workers: accumulators used, each serving every workers-th query
    (numba's thread count; the kernel calls no numba.get_num_threads, which would keep it out of
    numba's cache).
    Returns (rows int32, scores float32), each (queries, k): best first, ties by ascending row; past a
    query's last matching passage the row is -1 and the score 0.
    """
    n_queries = len(pointers) - 1
    out_rows = np.full((n_queries, k), -1, dtype=np.int32)
    out_scores = np.zeros((n_queries, k), dtype=np.float32)
    workers = max(1, min(n_queries, workers))
    for w in prange(workers):
        scores, seen = acc[w], touched[w]
        heap_scores = np.empty(k, dtype=np.float32)
        heap_rows = np.empty(k, dtype=np.int32)
        for q in range(w, n_queries, workers):  # strided: a batch's slow queries spread over workers
            n_seen = 0
            for t in range(pointers[q], pointers[q + 1]):
                term = term_ids[t]
                for j in range(indptr[term], indptr[term + 1]):
                    row = indices[j]
                    before = scores[row]
                    # Branch-free: a first touch (every stored score is > 0) keeps the row written
                    # here; an unpredictable branch cost ~1/3 of this loop's time at 222k passages.
                    seen[n_seen] = row
                    n_seen += before == 0
                    scores[row] = before + data[j]
            size = 0
            for i in range(n_seen):
                row = seen[i]
                score = scores[row]
                scores[row] = 0
                if size < k:
                    heap_scores[size], heap_rows[size] = score, row
                    _sift_up(heap_scores, heap_rows, size)
                    size += 1
                elif _worse(heap_scores[0], heap_rows[0], score, row):
                    heap_scores[0], heap_rows[0] = score, row
                    _sift_down(heap_scores, heap_rows, 0, size)
            for pos in range(size - 1, -1, -1):  # pop the worst into the last free place
                out_scores[q, pos], out_rows[q, pos] = heap_scores[0], heap_rows[0]
                size -= 1
                heap_scores[0], heap_rows[0] = heap_scores[size], heap_rows[size]
                _sift_down(heap_scores, heap_rows, 0, size)
    return out_rows, out_scores
