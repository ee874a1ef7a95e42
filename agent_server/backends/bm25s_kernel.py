"""BM25 top-k over a bm25s score matrix that reads only what the query's terms can change.

bm25s 0.3's own kernel (`bm25s.numba.retrieve_utils._retrieve_internal_jitted`) allocates a dense
score array of every passage per query, scatter-adds the query terms' columns into it and runs a heap
over the whole array: O(passages) per query whatever the query, and its order among equal scores is
arbitrary, so the backend asked it for 32 candidates past k to re-sort ties as Anserini does. This one
is term-at-a-time accumulation with MaxScore pruning (Turtle & Flood, 1995, "Query evaluation:
strategies and optimizations"): one accumulator of the corpus size per worker, kept across calls and
reset only where a query touched it; the terms that can add most (the rarest) go first, every passage
they touch becomes a candidate, and once the terms left could not lift an untouched passage past the
k-th best partial score, those terms only add to the candidates that can still make the top k (by
binary search in their columns when that reads less). Ties are broken in the kernel by a given rank
(the passage ids' order, as Anserini's), so k candidates are all it keeps.

The scores are bit-identical to bm25s's: the final candidates' scores are summed again the way
`bm25s.scoring._compute_relevance_from_scores_jit_ready` sums, each passage's float32 sum starting at
0 and adding the query terms' precomputed (term, passage) scores in the query's term order (a
repeated term adds again). The pruning bounds leave a slack (_SLACK) wider than the float32 rounding
of partial sums taken in another order, so no passage of the exact top k is dropped.

`search_top_k` is plain Python here; agent_server.backends.bm25s_engine._scorer compiles it with
numba (parallel, nogil, cached). The helpers are numba functions it calls, inlined.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(nogil=True, inline="always")  # numba-level: a call would count references to the arrays
def _worse(score_a: np.float32, row_a: np.int32, score_b: np.float32, row_b: np.int32, tie_rank: np.ndarray) -> bool:
    """Whether (score_a, row_a) ranks after (score_b, row_b): a lower score, or the same and a higher
    tie rank."""
    return score_a < score_b or (score_a == score_b and tie_rank[row_a] > tie_rank[row_b])


@njit(nogil=True, inline="always")  # numba-level: a call would count references to the arrays
def _sift_down(scores: np.ndarray, rows: np.ndarray, pos: int, length: int, tie_rank: np.ndarray) -> None:
    """Restore the heap (worst at the root) below `pos` after its entry changed."""
    score, row = scores[pos], rows[pos]
    while True:
        child = 2 * pos + 1
        if child >= length:
            break
        right = child + 1
        if right < length and _worse(scores[right], rows[right], scores[child], rows[child], tie_rank):
            child = right
        if not _worse(scores[child], rows[child], score, row, tie_rank):
            break
        scores[pos], rows[pos] = scores[child], rows[child]
        pos = child
    scores[pos], rows[pos] = score, row


@njit(nogil=True, inline="always")  # numba-level: a call would count references to the arrays
def _sift_up(scores: np.ndarray, rows: np.ndarray, pos: int, tie_rank: np.ndarray) -> None:
    """Restore the heap (worst at the root) above `pos` after an entry was appended there."""
    score, row = scores[pos], rows[pos]
    while pos > 0:
        parent = (pos - 1) >> 1
        if not _worse(score, row, scores[parent], rows[parent], tie_rank):
            break
        scores[pos], rows[pos] = scores[parent], rows[parent]
        pos = parent
    scores[pos], rows[pos] = score, row


# Slack on the pruning bounds: partial sums are float32 in another order than the final ones (relative
# error at most ~6e-8 per term: under 1e-4 for the ~800 terms of a 4,096-character query, under 1e-3
# up to ~16,000); a passage is dropped only when it is short by more.
_SLACK = 1e-3


@njit(nogil=True, inline="always")  # numba-level: a call would count references to the arrays
def _push(
    heap_scores: np.ndarray, heap_rows: np.ndarray, size: int, score: np.float32, row: np.int32, tie_rank: np.ndarray
) -> int:
    """Offer (score, row) to a bounded heap holding the best len(heap_scores); returns its new size."""
    if size < len(heap_scores):
        heap_scores[size], heap_rows[size] = score, row
        _sift_up(heap_scores, heap_rows, size, tie_rank)
        return size + 1
    if _worse(heap_scores[0], heap_rows[0], score, row, tie_rank):
        heap_scores[0], heap_rows[0] = score, row
        _sift_down(heap_scores, heap_rows, 0, size, tie_rank)
    return size


@njit(nogil=True, inline="always")  # numba-level: a call would count references to the arrays
def _kth_best(
    acc: np.ndarray, rows: np.ndarray, n: int, heap_scores: np.ndarray, heap_rows: np.ndarray, tie_rank: np.ndarray
) -> float:
    """The len(heap_scores)-th best acc[rows[:n]] (0 when fewer)."""
    size = 0
    for i in range(n):
        score = acc[rows[i]]
        if size < len(heap_scores) or score >= heap_scores[0]:  # the common case decided here: fast
            size = _push(heap_scores, heap_rows, size, score, rows[i], tie_rank)
    return heap_scores[0] if size == len(heap_scores) else 0.0


@njit(nogil=True, inline="always")  # numba-level: a call would count references to the arrays
def _lookup(data: np.ndarray, indices: np.ndarray, start: int, end: int, row: int) -> np.float32:
    """The stored score of passage `row` in the column data[start:end] (rows ascending), or 0."""
    low, high = start, end
    while low < high:
        mid = (low + high) >> 1
        if indices[mid] < row:
            low = mid + 1
        else:
            high = mid
    if low < end and indices[low] == row:
        return data[low]
    return np.float32(0)


@njit(nogil=True)
def _pop_sorted(
    heap_scores: np.ndarray,
    heap_rows: np.ndarray,
    size: int,
    tie_rank: np.ndarray,
    out_scores: np.ndarray,
    out_rows: np.ndarray,
) -> None:
    """Empty the heap into out_scores/out_rows, best first."""
    for pos in range(size - 1, -1, -1):  # pop the worst into the last free place
        out_scores[pos], out_rows[pos] = heap_scores[0], heap_rows[0]
        size -= 1
        heap_scores[0], heap_rows[0] = heap_scores[size], heap_rows[size]
        _sift_down(heap_scores, heap_rows, 0, size, tie_rank)


@njit(nogil=True)
def _dense_top_k(
    terms: np.ndarray,
    data: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    tie_rank: np.ndarray,
    acc: np.ndarray,
    heap_scores: np.ndarray,
    heap_rows: np.ndarray,
    out_scores: np.ndarray,
    out_rows: np.ndarray,
) -> None:
    """_query_top_k for a query whose columns hold more entries than there are passages (a long
    query of common terms): then nothing is pruned, and bm25s's way is cheapest, summing in the
    query's term order straight into the accumulator and reading it all."""
    k = len(out_rows)
    for t in terms:
        for j in range(indptr[t], indptr[t + 1]):
            acc[indices[j]] += data[j]
    size = 0
    for row in range(len(acc)):
        score = acc[row]
        if score > 0:
            acc[row] = 0
            if size < k or score >= heap_scores[0]:
                size = _push(heap_scores, heap_rows, size, score, row, tie_rank)
    _pop_sorted(heap_scores, heap_rows, size, tie_rank, out_scores, out_rows)


@njit(nogil=True)
def _query_top_k(
    terms: np.ndarray,
    data: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    term_max: np.ndarray,
    tie_rank: np.ndarray,
    acc: np.ndarray,
    seen: np.ndarray,
    heap_scores: np.ndarray,
    heap_rows: np.ndarray,
    out_scores: np.ndarray,
    out_rows: np.ndarray,
) -> None:
    """One query's top-k (k = len(out_rows)) into out_scores/out_rows; see search_top_k."""
    k = len(out_rows)
    uniq = np.unique(terms)
    n_uniq = len(uniq)
    bound = np.zeros(n_uniq)  # most a term adds to a passage (times its repeats), float64
    repeats = np.zeros(n_uniq, dtype=np.float32)
    for t in terms:
        u = np.searchsorted(uniq, t)
        repeats[u] += 1
        bound[u] += term_max[t]
    order = np.argsort(-bound)  # the terms that can add most (the rarest) first
    rest = bound.sum()
    # OR phase: every passage a term touches becomes a candidate, until the terms left could not lift
    # an untouched passage into the top k (MaxScore, Turtle & Flood 1995).
    n_seen = 0
    top = np.float32(0)  # the highest partial score so far: the k-th best is at most this
    check_below = rest  # the k-th best is looked for again once `rest` is under this (a long query)
    done = 0
    while done < n_uniq:
        if n_seen >= k and rest <= check_below and rest * (1 + _SLACK) < top * (1 - _SLACK):
            theta = _kth_best(acc, seen, n_seen, heap_scores, heap_rows, tie_rank)
            if rest * (1 + _SLACK) < theta * (1 - _SLACK):
                break
            check_below = rest * 0.9  # O(candidates) a look: not after every term of 500
        u = order[done]
        term, times = uniq[u], repeats[u]
        for j in range(indptr[term], indptr[term + 1]):
            row = indices[j]
            before = acc[row]
            # Branch-free: a first touch (every stored score is > 0) keeps the row written here; an
            # unpredictable branch cost ~1/3 of this loop's time at 222k passages.
            seen[n_seen] = row
            n_seen += before == 0
            after = before + data[j] * times
            acc[row] = after
            if after > top:
                top = after
        rest -= bound[u]
        done += 1
    # AND phase: the terms left only add to candidates that can still reach the top k.
    while done < n_uniq:
        theta = _kth_best(acc, seen, n_seen, heap_scores, heap_rows, tie_rank)
        kept = 0
        for i in range(n_seen):
            row = seen[i]
            if (acc[row] + rest) * (1 + _SLACK) < theta * (1 - _SLACK):
                acc[row] = 0
            else:
                seen[kept] = row
                kept += 1
        n_seen = kept
        u = order[done]
        term, times = uniq[u], repeats[u]
        start, end = indptr[term], indptr[term + 1]
        if n_seen * 20 < end - start:  # a binary search per candidate beats reading the column
            for i in range(n_seen):
                row = seen[i]
                acc[row] += _lookup(data, indices, start, end, row) * times
        else:
            for j in range(start, end):
                row = indices[j]
                if acc[row] > 0:
                    acc[row] += data[j] * times
        rest -= bound[u]
        done += 1
    # The exact scores of the candidates near or above the k-th best partial: each passage's float32
    # sum from 0 in the query's term order, a repeated term adding again, as bm25s sums.
    theta = _kth_best(acc, seen, n_seen, heap_scores, heap_rows, tie_rank) * (1 - 2 * _SLACK)
    size = 0
    for i in range(n_seen):
        row = seen[i]
        if acc[row] >= theta:
            score = np.float32(0)
            for t in terms:
                score += _lookup(data, indices, indptr[t], indptr[t + 1], row)
            if size < k or score >= heap_scores[0]:
                size = _push(heap_scores, heap_rows, size, score, row, tie_rank)
        acc[row] = 0
    _pop_sorted(heap_scores, heap_rows, size, tie_rank, out_scores, out_rows)


def search_top_k(
    term_ids: np.ndarray,
    pointers: np.ndarray,
    k: int,
    data: np.ndarray,
    indptr: np.ndarray,
    indices: np.ndarray,
    term_max: np.ndarray,
    tie_rank: np.ndarray,
    acc: np.ndarray,
    touched: np.ndarray,
    workers: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k passages of each query of a batch, queries in parallel (prange over `workers`).

    term_ids: int32 (total terms,), the batch's term ids, query i's at pointers[i]:pointers[i + 1];
    pointers: int (queries + 1,); k: hits per query, 1 <= k <= passages; data / indices / indptr: the
    bm25s index's CSC matrix (float32 scores, int32 passage rows ascending in each column, int indptr
    over terms, as bm25s 0.3 saves it), every stored score > 0 (Lucene's BM25: idf and tf part both
    positive); term_max: float32 (terms,), each column's highest score (0 if empty); tie_rank: int32
    (passages,), the order among equal scores (lower first; BM25sRetriever: the passage ids' order,
    as Anserini breaks ties), so k candidates are enough, none extra for ties; acc: float32
    (>= workers, passages), all 0, and left all 0; touched: int32 (>= workers, passages + 1), scratch.
    The caller keeps acc and touched across calls (one pair per calling thread), so a call costs
    nothing per passage untouched. workers: accumulators used, each serving every workers-th query
    (numba's thread count; the kernel calls no numba.get_num_threads, which would keep it out of
    numba's cache).
    Returns (rows int32, scores float32), each (queries, k): best first, ties by ascending tie_rank;
    past a query's last matching passage the row is -1 and the score 0.
    """
    n_queries = len(pointers) - 1
    out_rows = np.full((n_queries, k), -1, dtype=np.int32)
    out_scores = np.zeros((n_queries, k), dtype=np.float32)
    workers = max(1, min(n_queries, workers))
    for w in prange(workers):
        heap_scores = np.empty(k, dtype=np.float32)
        heap_rows = np.empty(k, dtype=np.int32)
        for q in range(w, n_queries, workers):  # strided: a batch's slow queries spread over workers
            terms = term_ids[pointers[q] : pointers[q + 1]]
            entries = 0
            for t in terms:
                entries += indptr[t + 1] - indptr[t]
            if entries > acc.shape[1]:
                _dense_top_k(
                    terms, data, indptr, indices, tie_rank, acc[w], heap_scores, heap_rows, out_scores[q], out_rows[q]
                )
            elif len(terms):
                _query_top_k(
                    terms,
                    data,
                    indptr,
                    indices,
                    term_max,
                    tie_rank,
                    acc[w],
                    touched[w],
                    heap_scores,
                    heap_rows,
                    out_scores[q],
                    out_rows[q],
                )
    return out_rows, out_scores
