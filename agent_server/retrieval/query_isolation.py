"""Keeping a backend failure to the query that causes it.

A backend searches a batch as one call, so one query it cannot search (Lucene's clause limit, a
string the JVM will not take...) fails the batch, and with coalescing every other client's request
in it. `search_isolated` retries a failed batch in halves until each failing query stands alone:
the others get their hits, the failing ones a `QueryFailure`. If the backend fails even on a probe
query, it is broken rather than the batch: `BackendFailure` is raised and every request fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agent_server.backends.base import Hit

log = logging.getLogger("agent_server.retriever")

PROBE_QUERY = "river"  # any ordinary query: a backend that cannot search it is broken


@dataclass(frozen=True, slots=True)
class QueryFailure:
    """The backend failed on this query, searched alone; `detail` says how."""

    detail: str


Row = list[Hit] | QueryFailure
SearchFn = Callable[[Sequence[str], int], list[list[Hit]]]


class BackendFailure(RuntimeError):
    """The backend failed on a batch and on a probe query too: nothing can be searched now."""


def _describe(err: Exception) -> str:
    first_line = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first_line}"[:300]


def search_isolated(search: SearchFn, queries: Sequence[str], k: int) -> list[Row]:
    """`search(queries, k)`, with a failure kept to the queries that cause it.

    Raises BackendFailure when the backend fails on the probe query as well. A batch with f failing
    queries out of n costs about 1 + 2 f log2(n) backend calls, nearly all on small parts of it.
    """
    try:
        return list(search(queries, k))
    except Exception as err:  # noqa: BLE001 - any backend error: found out below whose it is
        first = err
    try:
        search([PROBE_QUERY], k)
    except Exception as err:  # noqa: BLE001
        raise BackendFailure(f"the search backend fails on every query: {_describe(err)}") from first
    rows: list[Row] = [QueryFailure(_describe(first))] * len(queries)
    _split(search, list(queries), k, 0, rows, first)
    return rows


def _split(search: SearchFn, queries: list[str], k: int, offset: int, rows: list[Row], err: Exception) -> None:
    """Fill rows[offset:offset+len(queries)] for a part that failed with `err`."""
    if len(queries) == 1:
        rows[offset] = QueryFailure(_describe(err))
        log.warning("query failed alone, answered with an error: %r: %s", queries[0][:200], _describe(err))
        return
    mid = len(queries) // 2
    for part, start in ((queries[:mid], offset), (queries[mid:], offset + mid)):
        try:
            rows[start : start + len(part)] = search(part, k)
        except Exception as part_err:  # noqa: BLE001
            _split(search, part, k, start, rows, part_err)
