"""Hybrid retrieval: reciprocal rank fusion of a lexical and a dense retriever.

RRF (Cormack et al. 2009) needs no score calibration between BM25 and cosine: a passage scores
sum over sides of 1 / (rrf_k + rank), rank 1-based, 0 from a side that did not return it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent_server.backends.base import Hit, Retriever


class HybridRetriever:
    name = "hybrid"

    def __init__(self, bm25: Retriever, dense: Retriever, depth: int = 50, rrf_k: int = 60) -> None:
        """Raises ValueError when the two sides hold different numbers of passages: RRF fuses by passage id,
        so both must index one corpus (agent_server.startup_checks compares the corpora before loading)."""
        if len(bm25) != len(dense):
            raise ValueError(
                f"hybrid over two corpora: the BM25 index holds {len(bm25):,} passages and the dense index "
                f"{len(dense):,}; build both from the same corpus"
            )
        self.bm25, self.dense = bm25, dense
        self.depth, self.rrf_k = depth, rrf_k

    def __len__(self) -> int:
        return len(self.dense)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        if k <= 0:
            return [[] for _ in queries]
        depth = max(k, self.depth)
        sides = (self.bm25.search(queries, depth), self.dense.search(queries, depth))
        return [self._fuse([side[i] for side in sides], k) for i in range(len(queries))]

    def _fuse(self, rankings: list[list[Hit]], k: int) -> list[Hit]:
        scores: dict[str, float] = {}
        contents: dict[str, str] = {}
        for ranking in rankings:
            for rank, hit in enumerate(ranking, start=1):
                scores[hit.id] = scores.get(hit.id, 0.0) + 1.0 / (self.rrf_k + rank)
                contents.setdefault(hit.id, hit.contents)
        # sorted() is stable: equal scores keep first-seen order (BM25's ranking first).
        best = sorted(scores, key=scores.__getitem__, reverse=True)[:k]
        return [Hit(pid, contents[pid], scores[pid]) for pid in best]

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "passages": len(self),
            "fusion": "rrf",
            "rrf_k": self.rrf_k,
            "depth": self.depth,
            "bm25": self.bm25.describe(),
            "dense": self.dense.describe(),
        }

    def close(self) -> None:
        self.bm25.close()
        self.dense.close()
