"""The `/retrieve` wire schema, defined once and used by the client (search_env) and the server (agent_server).

It is Search-R1's contract: request `{"queries": [...], "topk": 3, "return_scores": true}`, response
`{"result": [[{"document": {"id", "contents"}, "score"}]]}`; with `return_scores` false the inner items
are the bare documents. Single-query clients (SkyRL-gym, GEM) send `{"query": "..."}` instead.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Document(BaseModel):
    id: str
    contents: str = Field(description='wiki-18 contents: "\\"Title\\"\\ntext"')


class ScoredDocument(BaseModel):
    document: Document
    score: float


class RetrieveRequest(BaseModel):
    """One of `queries` (a batch) or `query` (one query); unknown keys are ignored, as Search-R1 does."""

    model_config = ConfigDict(extra="ignore")

    queries: list[str] | None = Field(default=None, description="A batch of queries (Search-R1, verl, prime).")
    query: str | None = Field(default=None, description="One query (SkyRL-gym, GEM).")
    topk: int | None = Field(default=None, description="Passages per query; missing or null: the server default.")
    return_scores: bool = Field(default=False, description="Wrap each document as {document, score}.")

    @model_validator(mode="after")
    def _one_of_queries_or_query(self) -> RetrieveRequest:
        if (self.queries is None) == (self.query is None):
            raise ValueError("give exactly one of 'queries' (a list of strings) or 'query' (a string)")
        return self

    @property
    def batch(self) -> list[str]:
        return self.queries if self.queries is not None else [self.query or ""]


class QueryError(BaseModel):
    """Why one query of a request has no documents: the backend failed on it (it alone, searched alone)."""

    index: int = Field(description="the query's position in the request")
    detail: str


class RetrieveResponse(BaseModel):
    """Nested per query; a msgpack `{"query": ...}` request (GEM) gets the flat list of its one query.

    `errors` appears only when a query could not be searched: its `result` row is then empty, so a
    client that reads only `result` (Search-R1's trainer) still gets a well-formed answer.
    """

    result: list[list[ScoredDocument]] | list[list[Document]] | list[ScoredDocument] | list[Document]
    errors: list[QueryError] | None = None


class RetrievalLimits(BaseModel):
    """The limits of one `/retrieve` request, published under `limits` in `GET /info`; each is a
    command-line flag of `agent-server retriever`. Clients read them to cut or refuse as the server does."""

    default_topk: int = Field(3, ge=1, description="topk when a request gives none (Search-R1's --topk)")
    max_topk: int = Field(100, ge=1)
    max_queries: int = Field(4096, ge=1, description="queries in one request")
    max_query_chars: int = Field(4096, ge=1, description="a longer query is cut to this (refused when strict)")
    max_query_terms: int = Field(
        1024, ge=1, description="distinct terms searched per query (Lucene's clause limit); the first ones are kept"
    )
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    # Search-R1's trainer posts an empty list when no trajectory searched in a turn and reads
    # `result` from the answer: refusing it would crash that trainer mid-run.
    allow_empty_batch: bool = True
    strict: bool = Field(False, description="refuse an awkward query with 422 instead of repairing it")

    def violation(self, req: RetrieveRequest) -> str | None:
        """The message for the first request-level limit `req` breaks, or None.

        The queries' own text (length, terms, surrogates) is search_env.query_sanitizer's to judge.
        """
        if req.topk is not None and not 1 <= req.topk <= self.max_topk:
            return f"topk must be between 1 and {self.max_topk}, got {req.topk}"
        queries = req.batch
        if not queries and not self.allow_empty_batch:
            return "queries is empty: send at least one query"
        if len(queries) > self.max_queries:
            return f"too many queries in one request: {len(queries)} > limit {self.max_queries}"
        return None


def refused_topk_limit(topk: int, info: object) -> int | None:
    """The `max_topk` a retriever's `/info` body reports under `limits` when `topk` is above it (every
    search with that topk would be refused), else None (within it, or no limits reported: Search-R1's
    server). Shared by the trainer's preflight and the env server's session create."""
    limits = info.get("limits") if isinstance(info, dict) else None
    max_topk = limits.get("max_topk") if isinstance(limits, dict) else None
    return max_topk if isinstance(max_topk, int) and topk > max_topk else None


class ErrorResponse(BaseModel):
    detail: str


class HealthResponse(BaseModel):
    status: str = Field(description="'ready', 'loading' or 'failed'")
    detail: str | None = None
