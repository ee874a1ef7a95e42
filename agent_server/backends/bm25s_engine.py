"""BM25 in Python (bm25s, numba) on the same analysis and scoring as our Lucene indexes, no JVM.

bm25s (Lù, 2024; github.com/xhluca/bm25s) precomputes each (term, passage) BM25 score into a sparse
matrix at build time, so a query is a sum of a few matrix columns and a top-k: no JVM, no stored
documents to decode. The search is our numba kernel (agent_server.backends.bm25s_kernel): it reads
only the query terms' columns, skips what cannot reach the top k (MaxScore) and orders ties by id
itself; bm25s's own scores every passage per query. Same scores, bit for bit. Terms come from
agent_server.backends.lucene_analyzer (Lucene's default English analysis); scoring is Lucene's
BM25 (bm25s method "lucene": idf = ln(1 + (N - df + 0.5)/(df + 0.5)), tf part = tf / (tf + k1 (1 - b
+ b dl/avgdl))) with pyserini's k1=0.9, b=0.4. Scores equal Lucene's up to its 1-byte quantised
document lengths, so a near tie can swap; see docs/benchmarks/bm25s-*.

An index directory holds `bm25s/` (bm25s's own files), `passages/` (the corpus's PassageStore: the
matrix's column = corpus row) and `searchgym-bm25s.json` (parameters, corpus identity), written last.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent_server.backends.base import Hit
from agent_server.backends.lucene_analyzer import LuceneEnglishAnalyzer
from agent_server.index_builds import check_build_paths, current_scope, publish_build
from agent_server.passage_store import PassageStore
from search_env import __version__

logger = logging.getLogger(__name__)

META = "searchgym-bm25s.json"
ENGINE_DIR = "bm25s"
STORE_DIR = "passages"
K1, B = 0.9, 0.4  # pyserini's (Anserini's) BM25 defaults, as the Lucene backend uses
_CHUNK = 20_000  # passages analysed between two checks of the build scope
_PARALLEL_MIN_QUERIES = 64  # batches under this are scored on one thread (see _top_k)


def build_bm25s_index(
    corpus: Path, out_dir: Path, *, k1: float = K1, b: float = B, skip_bad_lines: bool = False, progress: bool = True
) -> Path:
    """Analyse every passage of `corpus` and write a bm25s index at `out_dir`; returns `out_dir`.

    Built in a temp folder beside `out_dir`, renamed to it on success (removed on failure or
    interruption). The corpus is validated first, as for the Lucene backend: a bad line raises
    BadRecordError, or with `skip_bad_lines` is left out. Raises FileNotFoundError, FileExistsError,
    BuildInterrupted (this thread's BuildScope stopped). Memory: about 12 bytes per (term, passage)
    pair while building (~0.2 GB for 222k passages).
    """
    import bm25s

    corpus, out_dir, check = check_build_paths(corpus, out_dir, skip_bad_lines=skip_bad_lines)
    work = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.perf_counter()
    scope = current_scope()
    try:
        store = PassageStore.open_or_build(corpus, work / STORE_DIR, progress=progress, skip_lines=check.bad_set)
        analyzer = LuceneEnglishAnalyzer()
        vocab: dict[str, int] = {}
        doc_ids: list[list[int]] = []
        for start in range(0, len(store), _CHUNK):
            if scope is not None:
                scope.check_stopped()
            for passage in store.get_rows(np.arange(start, min(len(store), start + _CHUNK))):
                doc_ids.append([vocab.setdefault(t, len(vocab)) for t in analyzer.terms(passage.contents)])
        analyse_seconds = time.perf_counter() - started
        engine = bm25s.BM25(k1=k1, b=b, method="lucene")
        engine.index((doc_ids, vocab), show_progress=False)
        engine.save(work / ENGINE_DIR, show_progress=False)
        count = len(store)
        store.close()
        stat = corpus.stat()
        meta = {
            "backend": "bm25s",
            "corpus": {"path": str(corpus), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
            "count": count,
            "skipped_lines": check.skipped,
            "k1": k1,
            "b": b,
            "method": "lucene",
            "analyzer": "lucene-english (StandardTokenizer, possessive, lowercase, stopwords, Porter)",
            "terms": len(vocab),
            "analyse_seconds": round(analyse_seconds, 3),
            "build_seconds": round(time.perf_counter() - started, 3),
            "bm25s_version": bm25s.__version__,
            "searchgym_version": __version__,
        }
        publish_build(work, out_dir, META, meta)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return out_dir


@functools.cache
def _scorer() -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """Our kernel (agent_server.backends.bm25s_kernel.search_top_k; bm25s's own scores every passage
    per query), compiled with `cache=True`: compiling takes 10-50 s in every new process
    on a busy 2-core machine; a cached one loads in under 1 s after the first compile in an
    environment. One parallel kernel serves every thread count (numba.set_num_threads), so there is
    one cache entry. nogil: the search must not stall the server's event loop (HTTP of other
    requests); the kernel touches no Python object, so releasing the GIL is safe."""
    from numba import njit

    from agent_server.backends.bm25s_kernel import search_top_k

    try:
        return njit(parallel=True, nogil=True, cache=True)(search_top_k)
    except RuntimeError as err:  # no writable cache folder (site-packages, ~/.cache, NUMBA_CACHE_DIR)
        logger.warning("the bm25s kernel is compiled in every process: %s", err)
        return njit(parallel=True, nogil=True)(search_top_k)


def _column_maxima(data: np.ndarray, indptr: np.ndarray, indices: np.ndarray, where: Path) -> np.ndarray:
    """Each term's highest (term, passage) score, float32 (terms,), 0 for a term in no passage; checks
    the matrix is what bm25s_kernel.search_top_k takes (float32 scores > 0, int32 rows ascending in
    each column), else raises ValueError. One pass over the matrix (~20 ms at 222k passages)."""
    boundaries = indptr[1:-1]
    ascending = np.diff(indices) > 0
    ascending[boundaries[(boundaries > 0) & (boundaries < len(indices))] - 1] = True  # the next column
    if data.dtype != np.float32 or indices.dtype != np.int32 or not ascending.all() or (data.size and data.min() <= 0):
        raise ValueError(f"{where}: not float32 scores > 0 with int32 rows ascending per term (bm25s 0.3, lucene)")
    maxima = np.zeros(len(indptr) - 1, dtype=np.float32)
    filled = np.diff(indptr) > 0
    if filled.any():
        maxima[filled] = np.maximum.reduceat(data, indptr[:-1][filled])
    return maxima


class BM25sRetriever:
    """BM25 over a bm25s index (numba scorer), a batch searched on `threads` threads.

    Memory: the score matrix (8 bytes per (term, passage) pair) and, per thread that searches, the
    kernel's accumulators (8 bytes per passage per numba thread: 3.6 MB at 222k passages, 2 threads).

    The same answers as BM25Retriever on the same corpus (see module doc): hits are the passages
    sharing a term with the query, best first, ties by ascending id (Anserini's order); a query with
    no indexed term gets none.
    """

    name = "bm25s"

    def __init__(self, index_dir: str | Path, threads: int = 2, corpus: str | Path | None = None) -> None:
        """`corpus` overrides the corpus path recorded at build time (a moved corpus). Compiles the
        numba scorer now (a few seconds), so the first request does not pay for it. Raises
        FileNotFoundError (no index), CorpusChangedError (the corpus is not the one indexed)."""
        import bm25s

        self.index_dir = Path(index_dir).absolute()
        meta_path = self.index_dir / META
        if not meta_path.is_file():
            raise FileNotFoundError(f"no bm25s index at {self.index_dir} (missing {META})")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        self.threads = threads
        self._engine = bm25s.BM25.load(self.index_dir / ENGINE_DIR, show_progress=False)
        self._vocab: dict[str, int] = self._engine.vocab_dict
        self._analyzer = LuceneEnglishAnalyzer()
        self.store = PassageStore.open(self.index_dir / STORE_DIR, corpus)
        self._count = int(self._engine.scores["num_docs"])
        self._scratch = threading.local()  # the kernel's accumulators, one set per calling thread
        if self._count != len(self.store):
            raise ValueError(f"bm25s index has {self._count} passages but the corpus {len(self.store)}")
        s = self._engine.scores
        self._term_max = _column_maxima(s["data"], s["indptr"], s["indices"], self.index_dir / ENGINE_DIR)
        # Equal scores are common (same-length passages matching the same terms): Anserini orders them
        # by ascending id (as strings: "10" before "9"), and so does the kernel, given each row's rank.
        self._tie_rank = np.empty(self._count, dtype=np.int32)
        self._tie_rank[np.argsort(self.store.ids(), kind="stable")] = np.arange(self._count, dtype=np.int32)
        if self._count and self._vocab:  # compile (or load from numba's cache) the kernel now
            self._top_k([[next(iter(self._vocab.values()))]], 1)
            self._scratch = threading.local()  # searches run on other threads: free this one's

    def __len__(self) -> int:
        return self._count

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        results: list[list[Hit]] = [[] for _ in queries]
        todo: list[int] = []
        term_ids: list[list[int]] = []
        for i, q in enumerate(queries):
            # A repeated term counts again, as Anserini's bag-of-words query boosts it by its count.
            ids = [self._vocab[t] for t in self._analyzer.terms(q) if t in self._vocab]
            if ids:
                todo.append(i)
                term_ids.append(ids)
        k = min(int(k), self._count)
        if not todo or k <= 0:
            return results
        rows, scores = self._top_k(term_ids, k)  # best first, ties by ascending id: Anserini's order
        keep = scores > 0
        found = np.unique(rows[keep])
        passages = dict(zip(found.tolist(), self.store.get_rows(found), strict=True))
        for i, row_ids, row_keep, row_scores in zip(todo, rows.tolist(), keep.tolist(), scores.tolist(), strict=True):
            results[i] = [
                Hit(passages[r].id, passages[r].contents, s)
                for r, s, kept in zip(row_ids, row_scores, row_keep, strict=True)
                if kept
            ]
        return results

    def _top_k(self, term_ids: list[list[int]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, scores), each (queries, k), best first, ties by ascending passage id; past a query's
        matches the row is -1 and the score 0 (agent_server.backends.bm25s_kernel.search_top_k)."""
        import numba

        # A small batch (concurrent single-query clients) is scored on this thread alone: waking the
        # pool costs more than it saves and takes the core the event loop needs (32 clients: ~15% q/s).
        threads = self.threads if len(term_ids) >= _PARALLEL_MIN_QUERIES else 1
        width = max(1, min(self.threads, numba.config.NUMBA_NUM_THREADS))
        threads = min(threads, width)
        numba.set_num_threads(threads)
        scratch = getattr(self._scratch, "arrays", None)
        if scratch is None:  # 8 bytes per passage per numba thread, kept: no per-call O(passages) reset
            scratch = np.zeros((width, self._count), np.float32), np.empty((width, self._count + 1), np.int32)
            self._scratch.arrays = scratch
        pointers = np.cumsum([0] + [len(ids) for ids in term_ids], dtype=np.int32)
        flat = np.fromiter((t for ids in term_ids for t in ids), dtype=np.int32, count=int(pointers[-1]))
        s = self._engine.scores
        return _scorer()(
            flat, pointers, k, s["data"], s["indptr"], s["indices"], self._term_max, self._tie_rank, *scratch, threads
        )

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "index": str(self.index_dir),
            "passages": self._count,
            "k1": self.meta["k1"],
            "b": self.meta["b"],
            "method": self.meta["method"],
            "analyzer": self.meta["analyzer"],
            "threads": self.threads,
            "corpus": str(self.store.corpus_path),
            "bm25s": self.meta["bm25s_version"],
        }

    def close(self) -> None:
        self.store.close()
