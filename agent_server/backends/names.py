"""The retrieval backends' names and which index each reads, in one place: the CLIs' choices, the
index cache, the loader and the start-up checks all take them from here."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

IndexBackend = Literal["bm25", "bm25s", "dense"]  # what `agent-server index` builds and the cache holds
RetrieverBackend = Literal["bm25", "bm25s", "dense", "hybrid"]  # what `agent-server retriever` serves
INDEX_BACKENDS: tuple[str, ...] = get_args(IndexBackend)
RETRIEVER_BACKENDS: tuple[str, ...] = get_args(RetrieverBackend)
# Which backends read the --bm25-index (a Lucene index, or a bm25s one for bm25s) and the --dense-index.
BM25_INDEX_READERS = ("bm25", "bm25s", "hybrid")
DENSE_INDEX_READERS = ("dense", "hybrid")


def builds_missing_index(backend: str, bm25_index: Path | None, dense_index: Path | None) -> bool:
    """Whether serving `backend` needs an index built from the corpus: one it reads was not given."""
    return (backend in BM25_INDEX_READERS and bm25_index is None) or (
        backend in DENSE_INDEX_READERS and dense_index is None
    )
