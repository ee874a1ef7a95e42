"""Retrieval quality on QA records whose metadata names their supporting passages (the embedded world)."""

from __future__ import annotations

from collections.abc import Sequence

from search_env.qa_data import QARecord
from search_env.retrieval_schema import ScoredDocument


def supporting_recall(records: Sequence[QARecord], results: Sequence[Sequence[ScoredDocument]]) -> float:
    """Share of records with at least one of `metadata["supporting_passages"]` among their results."""
    if not records:
        raise ValueError("no records to measure recall on")
    found = [
        bool(set(r.metadata["supporting_passages"]) & {d.document.id for d in docs})
        for r, docs in zip(records, results, strict=True)
    ]
    return sum(found) / len(found)
