"""Dense retrieval: a faiss index of L2-normalised sentence embeddings (inner product = cosine).

An index directory holds `index.faiss` (faiss id = corpus row), `meta.json` (encoder, dim, count,
index type, corpus identity) and `passages/`, the corpus's PassageStore that turns ids into text.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from agent_server.backends.base import Hit
from agent_server.encoder import Encoder, canonical_encoder_name, load_encoder
from agent_server.index_builds import check_build_paths, current_scope, publish_build
from agent_server.passage_store import PassageStore
from search_env import __version__
from search_env.corpus_fingerprint import corpus_fingerprint

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
META_FILE = "meta.json"
STORE_DIR = "passages"
_EMBEDDINGS = "embeddings.npy"  # only while building; the index holds the vectors afterwards
_PROGRESS = "progress.json"
# faiss 1.15 scores a batch of nx queries with BLAS only once nx * d reaches its
# distance_compute_blas_threshold (128,000: 334 queries at d=384), one query at a time below. On the
# development CPU BLAS wins from about 4 queries (IndexFlatIP, 2,019 x 384, one thread: 256 queries
# 35 -> 3.4 ms, 32 queries 4.5 -> 0.8 ms, 2 queries 0.30 -> 0.37), and the server's 256-query chunks
# and coalesced small batches fell on the slow side (a 512-query request cost 45 ms more than one
# faiss call). Process-wide, as the setting is faiss's.
BLAS_FROM_QUERIES = 4


def make_faiss_index(index_type: str, dim: int) -> Any:
    """An empty inner-product index: "Flat", "HNSW32", "IVF1024,Flat", or any faiss.index_factory string."""
    import faiss

    try:
        return faiss.index_factory(dim, index_type, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        raise ValueError(f"not a faiss index type: {index_type!r} ({str(err).strip().splitlines()[-1]})") from err


def _training_rows(index: Any, count: int, seed: int = 0) -> np.ndarray:
    """A uniform sample of rows to train on: faiss wants >= ~40 points per IVF list."""
    import faiss

    try:
        nlist = faiss.extract_index_ivf(index).nlist
    except RuntimeError:
        nlist = 0
    size = min(count, max(50_000, 64 * nlist))
    return np.sort(np.random.default_rng(seed).choice(count, size=size, replace=False))


def _allocate(path: Path, count: int) -> None:
    """Give every byte of `path` a disk block now. A page written through a memmap of a sparse file
    that finds the disk full is a SIGBUS, which no `except` can catch; this raises OSError instead."""
    size = path.stat().st_size
    if not hasattr(os, "posix_fallocate"):  # macOS: no way to reserve the blocks; written as before
        return
    try:
        with path.open("r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, size)  # allocates only; the bytes already there stay
    except OSError as err:
        raise OSError(
            err.errno,
            f"cannot reserve {size / 1e6:.1f} MB for the embeddings of {count} passages in {path.parent}: "
            f"{err.strerror or err}",
        ) from err


def _allocated_memmap(path: Path, shape: tuple[int, int]) -> np.memmap:
    """A new float32 .npy memmap of `shape`, its blocks allocated on disk (see _allocate)."""
    embeddings = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
    try:
        _allocate(path, shape[0])
    except OSError:
        del embeddings
        path.unlink(missing_ok=True)  # nothing encoded yet; its space is the disk's again
        raise
    return embeddings


def build_dense_index(corpus: Path, out_dir: Path, encoder: str | Encoder | None = None,
                      index_type: str = "Flat", batch_size: int = 64, *, device: str | None = None,
                      dtype: str = "fp32", progress: bool = True, skip_bad_lines: bool = False) -> Path:
    """Encode `corpus` passage by passage into a faiss index at `out_dir`; returns `out_dir`.

    Passages stream from the corpus's PassageStore in chunks; embeddings go to a float32 memmap
    in `.<out>.partial/`, flushed after each chunk, so a crashed build resumes where it stopped
    (same corpus and encoder). The finished folder is renamed to `out_dir`. Not safe for two
    processes building the same `out_dir` at once (ensure_index locks for that).

    The corpus is validated first (search_env.corpus_validation): a bad line raises BadRecordError
    naming it, or with `skip_bad_lines` is left out (the passage store then reads a cleaned copy).

    The memmap's blocks are allocated on disk before it is written, so a full disk raises OSError
    (ENOSPC) here instead of killing the process with SIGBUS on a write through the map. Raises
    Passages are encoded in `dtype` (encoder.ENCODE_DTYPES; ignored for a given Encoder), fp32 by
    default, so an index is the same on every machine whatever precision queries are later encoded
    in; it is recorded in meta.json. Raises
    FileNotFoundError, FileExistsError, BadRecordError, ValueError (index type, dtype), OSError (disk), BuildInterrupted
    (this thread's BuildScope stopped; the partial encoding is kept for the next build to resume).
    """
    import faiss

    corpus, out_dir, check = check_build_paths(corpus, out_dir, skip_bad_lines=skip_bad_lines)
    enc = encoder if isinstance(encoder, Encoder) else load_encoder(encoder, device, dtype)
    make_faiss_index(index_type, enc.dim)  # a bad index type fails now, not after hours of encoding
    work = out_dir.with_name(f".{out_dir.name}.partial")
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    store = PassageStore.open_or_build(corpus, work / STORE_DIR, progress=progress, skip_lines=check.bad_set)
    count = len(store)
    # A partial encoding resumes only in the same precision: one index, one precision.
    key = {"encoder": enc.name, "encode_dtype": enc.dtype, "dim": enc.dim, "count": count,
           "corpus": corpus_fingerprint(corpus, with_name=False)}
    done = 0
    progress_path, emb_path = work / _PROGRESS, work / _EMBEDDINGS
    if progress_path.is_file() and emb_path.is_file():
        recorded = json.loads(progress_path.read_text())
        if {k: recorded.get(k) for k in key} == key:
            done = int(recorded["done"])
    if done:
        logger.info("resuming the encoding of %s at passage %d of %d", corpus, done, count)
        _allocate(emb_path, count)  # a file of an older build may be sparse
        embeddings = np.load(emb_path, mmap_mode="r+")
    else:
        embeddings = _allocated_memmap(emb_path, (count, enc.dim))
    scope = current_scope()

    chunk = batch_size * 32
    encode_started = time.perf_counter()
    with tqdm(total=count, initial=done, unit="passage", desc=f"encoding {corpus.name}",
              disable=not progress, smoothing=0.1) as bar:
        for start in range(done, count, chunk):
            if scope is not None:
                scope.check_stopped()
            end = min(count, start + chunk)
            texts = [p.contents for p in store.get_rows(np.arange(start, end))]
            embeddings[start:end] = enc.encode_passages(texts, batch_size=batch_size)
            embeddings.flush()
            progress_path.write_text(json.dumps({**key, "done": end}))
            bar.update(end - start)
    encode_seconds = time.perf_counter() - encode_started

    index = make_faiss_index(index_type, enc.dim)
    if not index.is_trained:
        rows = _training_rows(index, count)
        logger.info("training %s on %d vectors", index_type, len(rows))
        index.train(np.ascontiguousarray(embeddings[rows]))
    for start in range(0, count, 65536):
        index.add(np.ascontiguousarray(embeddings[start:start + 65536]))
    faiss.write_index(index, str(work / INDEX_FILE))
    stat = corpus.stat()
    meta = {
        "backend": "dense",
        "encoder": enc.name,
        "encode_dtype": enc.dtype,
        "dim": enc.dim,
        "count": count,
        "skipped_lines": check.skipped,
        "index_type": index_type,
        "corpus": {"path": str(corpus), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
        "encode_passages_per_s": round((count - done) / encode_seconds, 1) if encode_seconds else None,
        "build_seconds": round(time.perf_counter() - started, 3),
        "searchgym_version": __version__,
    }
    store.close()
    del embeddings
    emb_path.unlink()
    progress_path.unlink()
    publish_build(work, out_dir, META_FILE, meta)
    return out_dir


class DenseRetriever:
    """Top-k by inner product between the encoded query and the indexed passage embeddings."""

    name = "dense"

    def __init__(self, index_dir: str | Path, encoder: str | Encoder | None = None,
                 corpus: str | Path | None = None, *, nprobe: int | None = None,
                 ef_search: int | None = None, mmap: bool = False, device: str | None = None,
                 dtype: str = "auto", faiss_gpu: bool | None = None) -> None:
        """`encoder` None uses the one recorded at build time; `corpus` overrides the recorded path;
        `nprobe` (IVF) / `ef_search` (HNSW) trade speed for recall; `mmap` maps the index from disk;
        `dtype` is the query encoder's precision (encoder.resolve_dtype); `faiss_gpu` None moves the
        index to the GPUs when faiss has GPU support and sees one. Raises ValueError for a search
        parameter the index type does not have.
        """
        import faiss

        self.index_dir = Path(index_dir).absolute()
        meta_path = self.index_dir / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"no dense index at {self.index_dir} (missing {META_FILE})")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        built_with = self.meta["encoder"]
        asked = encoder.name if isinstance(encoder, Encoder) else canonical_encoder_name(encoder or built_with)
        if asked != built_with:
            raise ValueError(
                f"the dense index {self.index_dir} was built with encoder {built_with!r}, not {asked!r}: "
                "query vectors from another encoder are meaningless against it (omit --encoder to use its own)"
            )
        self.encoder = encoder if isinstance(encoder, Encoder) else load_encoder(built_with, device, dtype)
        if self.encoder.dim != self.meta["dim"]:
            raise ValueError(f"encoder dim {self.encoder.dim} != index dim {self.meta['dim']}")
        flags = faiss.IO_FLAG_MMAP if mmap else 0
        self.index = faiss.read_index(str(self.index_dir / INDEX_FILE), flags)
        blas_from = BLAS_FROM_QUERIES * self.index.d
        faiss.cvar.distance_compute_blas_threshold = min(faiss.cvar.distance_compute_blas_threshold, blas_from)
        params = faiss.ParameterSpace()
        for name, value, flag in (("nprobe", nprobe, "--nprobe"), ("efSearch", ef_search, "--ef-search")):
            if value is None:
                continue
            try:
                params.set_index_parameter(self.index, name, value)
            except RuntimeError as err:
                raise ValueError(
                    f"{flag} does not apply to the {self.meta['index_type']!r} index at {self.index_dir} "
                    "(--nprobe is for IVF indexes, --ef-search for HNSW ones)"
                ) from err
        self.nprobe, self.ef_search = nprobe, ef_search
        self.faiss_gpu = self._to_gpu(faiss) if faiss_gpu is not False and not mmap else False
        self.store = PassageStore.open(self.index_dir / STORE_DIR, corpus)
        if self.index.ntotal != len(self.store):
            raise ValueError(f"index has {self.index.ntotal} vectors but the corpus {len(self.store)} passages")

    def _to_gpu(self, faiss: Any) -> bool:
        """Move the index to all GPUs when this faiss build has GPU support and sees one (faiss-cpu has
        no get_num_gpus > 0). An index type faiss cannot put on a GPU (HNSW) stays on the CPU.
        Untested in CI: no GPU there."""
        if getattr(faiss, "get_num_gpus", lambda: 0)() <= 0:
            return False
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True  # split the vectors across GPUs, as Search-R1's --faiss_gpu does
        try:
            self.index = faiss.index_cpu_to_all_gpus(self.index, co=options)
        except RuntimeError as err:
            logger.warning("the %s index stays on the CPU: %s", self.meta["index_type"], err)
            return False
        if self.nprobe is not None:
            faiss.GpuParameterSpace().set_index_parameter(self.index, "nprobe", self.nprobe)
        return True

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        results: list[list[Hit]] = [[] for _ in queries]
        todo = [i for i, q in enumerate(queries) if q.strip()]
        if not todo or k <= 0:
            return results
        vectors = self.encoder.encode_queries([queries[i] for i in todo])
        scores, rows = self.index.search(vectors, int(k))  # one search for the whole batch
        found = np.unique(rows[rows >= 0])
        passages = dict(zip(found.tolist(), self.store.get_rows(found), strict=True))
        for i, row_scores, row_ids in zip(todo, scores.tolist(), rows.tolist(), strict=True):
            results[i] = [
                Hit(passages[r].id, passages[r].contents, float(s))
                for s, r in zip(row_scores, row_ids, strict=True) if r >= 0
            ]
        return results

    def describe(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "index": str(self.index_dir),
            "passages": len(self),
            "encoder": self.encoder.name,
            "dim": self.encoder.dim,
            "index_type": self.meta["index_type"],
            "nprobe": self.nprobe,
            "ef_search": self.ef_search,
            "encode_dtype": self.encoder.dtype,
            "faiss_gpu": self.faiss_gpu,
            "corpus": str(self.store.corpus_path),
        }

    def close(self) -> None:
        self.store.close()
