"""Indexes built on first use and cached under `searchgym_home()/indexes/`, and retriever loading.

A cached index lives at `indexes/<backend>-<key>/`, key = short hash of (corpus fingerprint,
encoder, index type, searchgym version): a changed corpus or encoder gets a fresh index, an
unchanged one is found again in milliseconds. A lock file keeps two processes (say, several
uvicorn workers starting together) from building the same index at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from agent_server.backends.base import Retriever
from agent_server.backends.names import INDEX_BACKENDS, RETRIEVER_BACKENDS, IndexBackend, RetrieverBackend
from agent_server.encoder import Encoder, canonical_encoder_name
from search_env import __version__
from search_env.corpus_fingerprint import corpus_fingerprint
from search_env.home import searchgym_home

logger = logging.getLogger(__name__)

@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on `path` (created if missing), released on exit or process death."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def index_key(backend: IndexBackend, corpus: Path, encoder: str | None = None, index_type: str = "Flat",
              skip_bad_lines: bool = False) -> str:
    dense = backend == "dense"
    parts: dict[str, object] = {
        "backend": backend,
        "corpus": corpus_fingerprint(corpus),
        "encoder": canonical_encoder_name(encoder) if dense else None,
        "index_type": index_type if dense else None,
        "searchgym": __version__,
    }
    if skip_bad_lines:  # only when set, so the keys of existing caches stay as they were
        parts["skip_bad_lines"] = True
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _is_complete(backend: IndexBackend, path: Path) -> bool:
    # Both builders write their metadata last and rename the folder into place only on success.
    from agent_server.backends.bm25 import META as BM25_META
    from agent_server.backends.bm25s_engine import META as BM25S_META
    from agent_server.backends.dense import META_FILE as DENSE_META

    return (path / {"bm25": BM25_META, "bm25s": BM25S_META}.get(backend, DENSE_META)).is_file()


def ensure_index(backend: IndexBackend, corpus: Path, encoder: str | Encoder | None = None,
                 root: Path | None = None, *, index_type: str = "Flat", threads: int = 2,
                 skip_bad_lines: bool = False) -> Path:
    """The cached `backend` index of `corpus`, built now if this is its first use; a bad corpus line
    raises BadRecordError unless `skip_bad_lines` (see search_env.corpus_validation)."""
    if backend not in INDEX_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(INDEX_BACKENDS)}, not {backend!r}")
    corpus = Path(corpus).absolute()
    encoder_name = encoder.name if isinstance(encoder, Encoder) else encoder
    indexes = (root or searchgym_home()) / "indexes"
    name = f"{backend}-{index_key(backend, corpus, encoder_name, index_type, skip_bad_lines)}"
    path = indexes / name
    if _is_complete(backend, path):
        return path
    with file_lock(indexes / f"{name}.lock"):
        if _is_complete(backend, path):  # built by another process while we waited
            return path
        shutil.rmtree(path, ignore_errors=True)  # an interrupted build's leftovers
        logger.info("building the %s index of %s into %s (first use; cached after)", backend, corpus, path)
        started = time.perf_counter()
        if backend == "bm25":
            from agent_server.backends.bm25 import build_bm25_index

            build_bm25_index(corpus, path, threads=threads, skip_bad_lines=skip_bad_lines)
        elif backend == "bm25s":
            from agent_server.backends.bm25s_engine import build_bm25s_index

            build_bm25s_index(corpus, path, skip_bad_lines=skip_bad_lines)
        else:
            from agent_server.backends.dense import build_dense_index

            build_dense_index(corpus, path, encoder=encoder, index_type=index_type, skip_bad_lines=skip_bad_lines)
        logger.info("built %s in %.1f s", path, time.perf_counter() - started)
    return path


def load_retriever(backend: RetrieverBackend, *, bm25_index: Path | None = None,
                   dense_index: Path | None = None, corpus: Path | None = None,
                   encoder: str | Encoder | None = None, threads: int = 2,
                   root: Path | None = None, skip_bad_lines: bool = False,
                   nprobe: int | None = None, ef_search: int | None = None,
                   encode_dtype: str = "auto", faiss_gpu: bool | None = None) -> Retriever:
    """The retriever the server runs: given indexes are opened, missing ones built from `corpus`.

    `nprobe`, `ef_search`, `encode_dtype`, `faiss_gpu`: the dense backend's (DenseRetriever).

    For BM25 the corpus also serves passages of an index that stores no raw docs; for dense and
    bm25s it overrides the corpus path recorded in the index. `bm25_index` is the bm25s index folder
    when `backend` is "bm25s".
    """
    if backend not in RETRIEVER_BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(RETRIEVER_BACKENDS)}, not {backend!r}")
    corpus = Path(corpus) if corpus is not None else None

    def need(kind: IndexBackend, given: Path | None) -> Path:
        if given is not None:
            return Path(given)
        if corpus is None:
            raise ValueError(f"the {kind} backend needs an index path or a corpus to build one from")
        return ensure_index(kind, corpus, encoder if kind == "dense" else None, root, threads=threads,
                            skip_bad_lines=skip_bad_lines)

    if backend == "bm25s":
        from agent_server.backends.bm25s_engine import BM25sRetriever

        return BM25sRetriever(need("bm25s", bm25_index), threads=threads, corpus=corpus)
    bm25 = dense = None
    if backend in ("bm25", "hybrid"):
        from agent_server.backends.bm25 import BM25Retriever

        bm25 = BM25Retriever(need("bm25", bm25_index), threads=threads, corpus=corpus)
    if backend in ("dense", "hybrid"):
        from agent_server.backends.dense import DenseRetriever

        # A given index with no --encoder uses the encoder it was built with.
        dense = DenseRetriever(need("dense", dense_index), encoder=encoder, corpus=corpus, nprobe=nprobe,
                               ef_search=ef_search, dtype=encode_dtype, faiss_gpu=faiss_gpu)
    if backend == "hybrid":
        from agent_server.backends.hybrid import HybridRetriever

        assert bm25 is not None and dense is not None
        return HybridRetriever(bm25, dense)
    retriever = bm25 if backend == "bm25" else dense
    assert retriever is not None
    return retriever
