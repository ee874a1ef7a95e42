"""The baseline the retrieval benchmark compares against: Search-R1's server design over our indexes.

A sync FastAPI endpoint (run in Starlette's thread pool, as Search-R1's is) that searches one query
at a time in a Python loop, with no result cache and no coalescing. Same backends and indexes as
`agent-server retriever`, so the ratio measures batching, coalescing and serving alone.

    python benchmarks/naive_retrieval_server.py --backend bm25 --world default --port 8100
"""

from __future__ import annotations

import argparse
import threading

import uvicorn
from fastapi import FastAPI

from agent_server.embedded_indexes import ensure_index, load_retriever
from search_env.retrieval_schema import RetrieveRequest
from search_env.world.store import ensure_world


def build_app(backend: str, world: str) -> FastAPI:
    corpus = ensure_world(world).corpus
    retriever = load_retriever(
        backend,
        bm25_index=ensure_index("bm25", corpus) if backend in ("bm25", "hybrid") else None,
        dense_index=ensure_index("dense", corpus) if backend in ("dense", "hybrid") else None,
    )
    app = FastAPI()
    # Backends take one call at a time (their contract); the thread pool may run several requests.
    lock = threading.Lock()

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/retrieve")
    def retrieve(req: RetrieveRequest) -> dict:
        result = []
        for query in req.batch:  # one search per query, as Search-R1's BM25 server does
            with lock:
                hits = retriever.search([query], req.topk or 3)[0]
            result.append([{"document": {"id": h.id, "contents": h.contents}, "score": h.score} for h in hits])
        return {"result": result}

    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["bm25", "dense", "hybrid"], default="bm25")
    p.add_argument("--world", default="default")
    p.add_argument("--port", type=int, default=8100)
    args = p.parse_args()
    uvicorn.run(build_app(args.backend, args.world), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
