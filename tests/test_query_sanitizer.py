"""search_env.query_sanitizer: the one place a query is fitted to a retriever's limits."""

from __future__ import annotations

import pytest

from search_env.query_sanitizer import QueryRefused, replace_lone_surrogates, sanitize_queries, sanitize_query
from search_env.retrieval_schema import RetrievalLimits

LIMITS = RetrievalLimits()
PAIRS = [a + b for a in "abcdefghijklmnopqrstuvwxyzàáâãäåæçèéêëìíîïðñò" for b in "abcdefghijklmnopqrstuvwxyz"]


def test_ordinary_queries_are_left_alone():
    for query in ["who founded Quorvane Industries", "Zürich — «quotes»", "", "x" * 4096, "日本語 " * 300]:
        fitted, problem = sanitize_query(query, LIMITS)
        assert (fitted.text, fitted.changes, problem) == (query, (), None)


def test_lone_surrogates_become_replacement_characters():
    for query, expected in [("Name \ud83d", "Name \ufffd"), ("a\udc00b\ud800", "a\ufffdb\ufffd")]:
        fitted, problem = sanitize_query(query, LIMITS)
        assert fitted.text == expected and fitted.changes == ("surrogates_replaced",)
        assert problem is not None and "lone surrogate" in problem
        fitted.text.encode("utf-8")  # text again
    assert replace_lone_surrogates("\U0001f600 fine") == "\U0001f600 fine"


def test_over_long_queries_are_cut_to_the_limit():
    fitted, problem = sanitize_query("y" * 4097, LIMITS)
    assert fitted.text == "y" * 4096 and fitted.changes == ("cut",)
    assert problem == "is 4097 characters long: limit is 4096"


@pytest.mark.parametrize(
    "query",
    [
        " ".join(PAIRS[:1300]),  # 1,300 distinct two-letter words: 3,899 characters
        "".join(chr(0x4E00 + i) for i in range(2000)),  # ideographs: a term each, no spaces needed
        "/".join(PAIRS[:2000]),  # 2,000 distinct terms: cut to 4,096 characters first, still 1,365
    ],
)
def test_queries_of_too_many_distinct_terms_keep_their_first_terms(query):
    fitted, problem = sanitize_query(query, LIMITS)
    assert "clause_limited" in fitted.changes and problem is not None and "1024 distinct terms" in problem
    assert query.startswith(fitted.text) and len(fitted.text) < len(query)
    again, second = sanitize_query(fitted.text, LIMITS)
    assert second is None and again.text == fitted.text  # the kept part is within the limit


def test_repeated_terms_count_once():
    query = "river " * 680  # 4,080 characters, one distinct term
    assert sanitize_query(query, LIMITS)[1] is None


def test_strict_refuses_the_first_awkward_query_naming_it():
    strict = RetrievalLimits(strict=True)
    assert [q.text for q in sanitize_queries(["a", "b"], strict)] == ["a", "b"]
    with pytest.raises(QueryRefused) as err:
        sanitize_queries(["fine", "x" * 5000, "Name \ud83d"], strict)
    assert err.value.index == 1 and str(err.value) == "query 1 is 5000 characters long: limit is 4096"
    lenient = sanitize_queries(["fine", "x" * 5000, "Name \ud83d"], LIMITS)
    assert [q.changes for q in lenient] == [(), ("cut",), ("surrogates_replaced",)]
