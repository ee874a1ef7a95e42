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


class RetrieveResponse(BaseModel):
    """Nested per query; a msgpack `{"query": ...}` request (GEM) gets the flat list of its one query."""

    result: list[list[ScoredDocument]] | list[list[Document]] | list[ScoredDocument] | list[Document]


class ErrorResponse(BaseModel):
    detail: str


class HealthResponse(BaseModel):
    status: str = Field(description="'ready', 'loading' or 'failed'")
    detail: str | None = None
