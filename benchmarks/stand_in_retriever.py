"""A stand-in retrieval server for a machine where the real one cannot run (the GPU box: no Java, no
pyserini, nothing to download), so the trainer can be timed there against live HTTP.

    python benchmarks/stand_in_retriever.py --world small --port 8000

It speaks the `/retrieve` and `/health` wire schema of `search_env.retrieval_schema` (the same models
the real server uses) over the standard library's HTTP server, and ranks the world's passages by
query-term overlap, weighted by inverse document frequency. Not a search engine: results differ from
BM25's, which is fine for timing and mechanics checks and wrong for any reported EM.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydantic import ValidationError  # noqa: E402

from search_env.corpus import iter_corpus  # noqa: E402
from search_env.query_sanitizer import QueryRefused, sanitize_queries  # noqa: E402
from search_env.retrieval_schema import (  # noqa: E402
    Document,
    HealthResponse,
    RetrievalLimits,
    RetrieveRequest,
    RetrieveResponse,
    ScoredDocument,
)
from search_env.world.store import ensure_world  # noqa: E402

_TERM = re.compile(r"\w+")


class OverlapIndex:
    def __init__(self, documents: list[Document]) -> None:
        self.documents = documents
        self.terms = [set(_TERM.findall(d.contents.lower())) for d in documents]
        df = Counter(t for terms in self.terms for t in terms)
        self.idf = {t: math.log(len(documents) / n) for t, n in df.items()}

    def search(self, query: str, k: int) -> list[ScoredDocument]:
        q = set(_TERM.findall(query.lower()))
        scores = [sum(self.idf.get(t, 0.0) for t in q & terms) for terms in self.terms]
        best = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        return [ScoredDocument(document=self.documents[i], score=scores[i]) for i in best]


def serve(index: OverlapIndex, port: int, limits: RetrievalLimits | None = None) -> None:
    limits = limits or RetrievalLimits()  # the real server's defaults and checks (no FastAPI needed)

    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/health":
                self._send(200, HealthResponse(status="ready").model_dump_json())
            else:
                self._send(404, json.dumps({"detail": f"no route {self.path}"}))

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/retrieve":
                self._send(404, json.dumps({"detail": f"no route {self.path}"}))
                return
            length = self.headers.get("Content-Length", "")
            if not length.isdigit():  # the body is read by its declared length: no length, nothing to read
                self._send(411, json.dumps({"detail": "a POST to /retrieve needs a Content-Length header"}))
                return
            if int(length) > limits.max_body_bytes:  # the real server's status and message
                self._send(413, json.dumps({
                    "detail": f"request body of {length} bytes exceeds the limit of {limits.max_body_bytes} bytes"}))
                return
            try:
                request = RetrieveRequest.model_validate_json(self.rfile.read(int(length)))
            except ValidationError as err:
                self._send(422, json.dumps({"detail": str(err)}))
                return
            problem = limits.violation(request)
            if problem:
                self._send(422, json.dumps({"detail": problem}))
                return
            try:  # queries repaired (or refused, when strict) as the real server does
                queries = [q.text for q in sanitize_queries(request.batch, limits)]
            except QueryRefused as err:
                self._send(422, json.dumps({"detail": str(err)}))
                return
            hits = [index.search(q, request.topk or limits.default_topk) for q in queries]
            result = hits if request.return_scores else [[h.document for h in row] for row in hits]
            self._send(200, RetrieveResponse(result=result).model_dump_json())

        def log_message(self, *args: object) -> None:  # quiet: the trainer's log is the one to read
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", default="small")
    p.add_argument("--port", type=int, default=8000)
    args = p.parse_args()
    world = ensure_world(args.world)
    index = OverlapIndex([Document(id=d.id, contents=d.contents) for d in iter_corpus(world.corpus)])
    print(f"stand-in retriever over {len(index.documents)} passages on http://127.0.0.1:{args.port}", flush=True)
    serve(index, args.port)


if __name__ == "__main__":
    main()
