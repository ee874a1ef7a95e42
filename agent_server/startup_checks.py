"""`agent-server retriever`'s arguments checked before the server binds its port.

A retriever that cannot be what its user asked for should stop with one line and exit code 2, not
listen and answer /health with 503 "failed" (the server loads in the background, so any later error
only shows there and in the log): an unknown world preset, and a hybrid whose BM25 and dense indexes
were built from different corpora (RRF fuses ranks by passage id: over two corpora the ids name
different passages and every fused result is wrong without any error).

What is compared is what each index recorded at build time (`searchgym-bm25.json`, dense `meta.json`:
the corpus path, size and passage count), or the corpus a missing index will be built from. A prebuilt
index without our metadata (Search-R1's Lucene index) is not checked here; `HybridRetriever` still
refuses two sides of different passage counts when it loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent_server.backends.names import builds_missing_index
from search_env.corpus_fingerprint import corpus_fingerprint
from search_env.world.config import WORLD_PRESETS

BM25_META = "searchgym-bm25.json"  # agent_server.backends.bm25.META (not imported: it pulls in the JVM setup)
DENSE_META = "meta.json"  # agent_server.backends.dense.META_FILE


class StartupError(ValueError):
    """Arguments the server cannot serve; the message is one line naming them."""


def check_retriever_args(
    backend: str, world: str, bm25_index: Path | None, dense_index: Path | None, corpus: Path | None
) -> None:
    """Raise `StartupError` for an unknown `world` that would be served, or a hybrid over two corpora."""
    builds = corpus is None and builds_missing_index(backend, bm25_index, dense_index)
    if builds and world not in WORLD_PRESETS:
        raise StartupError(f"unknown world preset {world!r}; known: {', '.join(sorted(WORLD_PRESETS))}")
    if backend == "hybrid" and (bm25_index is not None or dense_index is not None):
        sides = [
            _side("--bm25-index", bm25_index, BM25_META, corpus),
            _side("--dense-index", dense_index, DENSE_META, corpus),
        ]
        if None not in sides and _differ(sides[0], sides[1]):
            a, b = sides
            raise StartupError(
                f"a hybrid needs one corpus under both indexes, but {a['what']} was built from {a['label']} and "
                f"{b['what']} from {b['label']}: build both from the same corpus (agent-server index --corpus ...)"
            )


def _side(flag: str, index: Path | None, meta_file: str, corpus: Path | None) -> dict[str, Any] | None:
    """What one side's passages come from: its index's recorded corpus, or the corpus it will be built from."""
    if index is None:
        if corpus is None:
            return None  # the embedded world: both sides are built from it
        size = corpus.stat().st_size if corpus.is_file() else None
        fingerprint = corpus_fingerprint(corpus, with_name=False) if corpus.is_file() else None
        return {
            "what": f"the {flag.split('-')[2]} index built from --corpus",
            "label": str(corpus),
            "size": size,
            "count": None,
            "fingerprint": fingerprint,
        }
    meta_path = Path(index) / meta_file
    if not meta_path.is_file():
        return None  # a prebuilt index of another tool: nothing recorded to compare
    meta = json.loads(meta_path.read_text())
    recorded = meta.get("corpus") or {}
    path = Path(recorded["path"]) if recorded.get("path") else None
    fingerprint = corpus_fingerprint(path, with_name=False) if path is not None and path.is_file() else None
    count = meta.get("count")
    label = f"{path or 'an unknown corpus'}" + (f" ({count:,} passages)" if count else "")
    return {
        "what": f"{flag} {index}",
        "label": label,
        "size": recorded.get("size"),
        "count": count,
        "fingerprint": fingerprint,
    }


def _differ(a: dict[str, Any], b: dict[str, Any]) -> bool:
    for key in ("fingerprint", "size", "count"):
        if a[key] is not None and b[key] is not None and a[key] != b[key]:
            return True
    return False
