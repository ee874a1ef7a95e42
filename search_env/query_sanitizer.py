"""Fitting a retrieval query to the retriever's limits, in one place.

The retrieval server passes every query through `sanitize_queries` before its cache and any
backend (BM25, dense, hybrid), and SearchQAEnv does the same with the limits the server publishes
in `/info`, so the two cut or refuse alike. Three kinds of awkward text are repaired, because
Search-R1's trainer crashes on any non-200 and its own server searches anything:

  - a lone surrogate (valid JSON, e.g. `"\\ud83d"`, but not text: no encoder takes it) -> U+FFFD;
  - more than `max_query_chars` characters -> the first `max_query_chars`;
  - more than `max_query_terms` distinct terms (Lucene refuses a query of more than 1,024
    clauses, one per distinct term) -> the text before the first term over the limit.

With `limits.strict` each is refused instead (`QueryRefused`), before anything is searched.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from search_env.retrieval_schema import RetrievalLimits

Change = Literal["surrogates_replaced", "cut", "clause_limited"]
CHANGES: tuple[Change, ...] = ("surrogates_replaced", "cut", "clause_limited")

_SURROGATE = re.compile("[\ud800-\udfff]")
# Terms as Lucene's StandardTokenizer makes them, near enough to count them: CJK ideographs and kana
# are one term per character; any other run of word characters is one term, split every 255
# characters (Lucene's maximum token length). Lower-cased, as Lucene's analyzers do.
_ONE_EACH = "\u2e80-\u2fff\u3040-\u30ff\u3100-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff"
_TERM = re.compile(f"[{_ONE_EACH}]|[^\\W{_ONE_EACH}]{{1,255}}")


class QueryRefused(ValueError):
    """A strict retriever's refusal of query `index`; `problem` says why (without the index)."""

    def __init__(self, index: int, problem: str):
        super().__init__(f"query {index} {problem}")
        self.index = index
        self.problem = problem


@dataclass(frozen=True, slots=True)
class SanitizedQuery:
    """The text to search and what was changed to get it (empty when the query was fine)."""

    text: str
    changes: tuple[Change, ...] = ()


def replace_lone_surrogates(text: str) -> str:
    """`text` with every surrogate code point replaced by U+FFFD (in a str they are never paired text)."""
    return _SURROGATE.sub("\ufffd", text) if _SURROGATE.search(text) else text


def _first_terms_end(text: str, max_terms: int) -> int | None:
    """Where the first term beyond `max_terms` distinct ones starts, or None if there is none."""
    if len(text) <= max_terms:  # every term is at least one character long
        return None
    seen: set[str] = set()
    for match in _TERM.finditer(text):
        term = match.group().lower()
        if term in seen:
            continue
        if len(seen) == max_terms:
            return match.start()
        seen.add(term)
    return None


def sanitize_query(query: str, limits: RetrievalLimits) -> tuple[SanitizedQuery, str | None]:
    """The repaired query, and what a strict retriever would say is wrong with it (None: nothing)."""
    text, changes, problems = query, [], []
    found = _SURROGATE.search(text)
    if found:
        problems.append(f"contains a lone surrogate (U+{ord(found.group()):04X}) at character {found.start()}")
        text, changes = replace_lone_surrogates(text), ["surrogates_replaced"]
    if len(text) > limits.max_query_chars:
        problems.append(f"is {len(text)} characters long: limit is {limits.max_query_chars}")
        text = text[: limits.max_query_chars]
        changes.append("cut")
    end = _first_terms_end(text, limits.max_query_terms)
    if end is not None:
        problems.append(f"has more than {limits.max_query_terms} distinct terms: limit is {limits.max_query_terms}")
        text = text[:end].rstrip()
        changes.append("clause_limited")
    return SanitizedQuery(text, tuple(changes)), ("; ".join(problems) or None)


def sanitize_queries(queries: Sequence[str], limits: RetrievalLimits) -> list[SanitizedQuery]:
    """Every query fitted to `limits`; with `limits.strict`, QueryRefused for the first that needs a change."""
    fitted = []
    for i, query in enumerate(queries):
        sanitized, problem = sanitize_query(query, limits)
        if problem is not None and limits.strict:
            raise QueryRefused(i, problem)
        fitted.append(sanitized)
    return fitted
