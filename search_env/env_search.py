"""The searches of env steps, each of which ends in an outcome and none of which raises.

Each query is fitted to the retriever's limits (its `/info`, read once) by the same
query_sanitizer the server runs, so an env cuts what the server would cut and, when the server is
strict, refuses what it would refuse without asking it. The queries of many envs go in one request
(in chunks of the server's `max_queries`). Whatever goes wrong is kept to the queries it concerns:
a refused request is asked again query by query, so only the query the server refuses goes
without documents; a query the server could not search, or a retriever that stays unreachable,
becomes an outcome with an `error` for the env to show in its observation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from search_env.query_sanitizer import Change, sanitize_query
from search_env.retrieval_schema import RetrievalLimits, ScoredDocument
from search_env.retriever_client import (
    RetrievalAnswer,
    RetrieverClient,
    RetrieverRequestError,
    RetrieverUnavailable,
)

MAX_ERROR_CHARS = 500  # what a policy reads of an error message; the servers' own are shorter


@dataclass(frozen=True, slots=True)
class SearchOutcome:
    """One query's search: the text searched, its documents, and what went wrong if anything did."""

    query: str  # as searched: fitted to the retriever's limits
    documents: list[ScoredDocument] = field(default_factory=list)
    changes: tuple[Change, ...] = ()  # how the query was fitted (cut, clause_limited, surrogates_replaced)
    error: str | None = None  # why there are no documents
    outage: bool = False  # the error is an unreachable retriever, not this query


class _Round:
    """The queries of one call: fitted first, then filled in by answers, refusals and outages."""

    def __init__(self, queries: Sequence[str], limits: RetrievalLimits):
        self.limits = limits
        self.texts: list[str] = []
        self.changes: list[tuple[Change, ...]] = []
        self.outcomes: list[SearchOutcome | None] = []
        for query in queries:
            fitted, problem = sanitize_query(query, limits)
            self.texts.append(fitted.text)
            self.changes.append(fitted.changes)
            refused = None
            if problem is not None and limits.strict:
                refused = SearchOutcome(query, error=f"the retrieval server (strict) refuses a query that {problem}")
            self.outcomes.append(refused)

    def chunks(self) -> list[list[int]]:
        todo = [i for i, outcome in enumerate(self.outcomes) if outcome is None]
        size = self.limits.max_queries
        return [todo[start : start + size] for start in range(0, len(todo), size)]

    def queries(self, chunk: Sequence[int]) -> list[str]:
        return [self.texts[i] for i in chunk]

    def _set(self, i: int, documents: list[ScoredDocument], error: str | None = None, outage: bool = False) -> None:
        error = None if error is None else error[:MAX_ERROR_CHARS]
        self.outcomes[i] = SearchOutcome(self.texts[i], documents, self.changes[i], error, outage)

    def take(self, chunk: Sequence[int], answer: RetrievalAnswer) -> None:
        if len(answer.results) != len(chunk):
            self.garble(chunk, ValueError(f"{len(answer.results)} result rows for {len(chunk)} queries"))
            return
        for j, i in enumerate(chunk):
            self._set(i, answer.results[j], answer.errors.get(j))

    def garble(self, chunk: Sequence[int], err: ValueError) -> None:
        for i in chunk:
            self._set(i, [], f"the retrieval server's answer could not be read: {err}")

    def refuse(self, i: int, err: RetrieverRequestError) -> None:
        self._set(i, [], f"the retrieval server refused the query ({err.status}): {err.message}")

    def lose(self, chunk: Sequence[int], err: RetrieverUnavailable) -> None:
        for i in chunk:
            self._set(i, [], str(err), outage=True)

    def result(self) -> list[SearchOutcome]:
        assert all(outcome is not None for outcome in self.outcomes)
        return self.outcomes  # type: ignore[return-value]


def search_queries(client: RetrieverClient, queries: Sequence[str], topk: int) -> list[SearchOutcome]:
    """An outcome for each query, searched together; never raises for what the retriever does."""
    batch = _Round(queries, client.limits())
    for chunk in batch.chunks():
        try:
            batch.take(chunk, client.retrieve_detailed(batch.queries(chunk), topk))
        except RetrieverUnavailable as err:
            batch.lose(chunk, err)
        except ValueError as err:  # an answer not in the wire schema (pydantic's ValidationError)
            batch.garble(chunk, err)
        except RetrieverRequestError as err:
            if len(chunk) == 1:
                batch.refuse(chunk[0], err)
                continue
            for i in chunk:  # refused for something in it: ask one by one, so only that one goes without
                try:
                    batch.take([i], client.retrieve_detailed(batch.queries([i]), topk))
                except RetrieverRequestError as one:
                    batch.refuse(i, one)
                except RetrieverUnavailable as down:
                    batch.lose([i], down)
                except ValueError as garbled:
                    batch.garble([i], garbled)
    return batch.result()


async def asearch_queries(client: RetrieverClient, queries: Sequence[str], topk: int) -> list[SearchOutcome]:
    """search_queries() for asyncio callers."""
    batch = _Round(queries, await client.alimits())
    for chunk in batch.chunks():
        try:
            batch.take(chunk, await client.aretrieve_detailed(batch.queries(chunk), topk))
        except RetrieverUnavailable as err:
            batch.lose(chunk, err)
        except ValueError as err:  # an answer not in the wire schema (pydantic's ValidationError)
            batch.garble(chunk, err)
        except RetrieverRequestError as err:
            if len(chunk) == 1:
                batch.refuse(chunk[0], err)
                continue
            for i in chunk:
                try:
                    batch.take([i], await client.aretrieve_detailed(batch.queries([i]), topk))
                except RetrieverRequestError as one:
                    batch.refuse(i, one)
                except RetrieverUnavailable as down:
                    batch.lose([i], down)
                except ValueError as garbled:
                    batch.garble([i], garbled)
    return batch.result()
