"""Answer normalisation and scoring: the tricky cases of Search-R1's and FlashRAG's rules."""

from __future__ import annotations

import pytest

from search_env.answers import em_check, f1_score, max_f1, normalize_answer, subem_check


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("The Eiffel Tower", "eiffel tower"),
        ("Theater of the Absurd", "theater of absurd"),  # "the" inside "Theater" survives
        ("another one", "another one"),  # "an" inside "another" survives
        ("A.B.C.", "abc"),
        ("U.S.", "us"),
        ("1,000", "1000"),  # punctuation inside numbers is dropped, digits join
        ("3.14", "314"),
        ("1990\u20131995", "1990\u20131995"),  # en dash is not in string.punctuation: stays
        ("\u201cquoted\u201d", "\u201cquoted\u201d"),  # curly quotes stay too
        ("rock-n-roll", "rocknroll"),
        ("  many \t spaces\n here ", "many spaces here"),
        ("The The", ""),  # the band's name is nothing but articles
        ("an apple a day", "apple day"),
        ("THE END", "end"),
        ("a", ""),
        ("", ""),
    ],
)
def test_normalize_answer(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def test_articles_split_by_punctuation_are_removed() -> None:
    # Punctuation goes first, so "the-end" becomes "theend" (kept) but "the.  end" loses "the".
    assert normalize_answer("the-end") == "theend"
    assert normalize_answer("the. end") == "end"


def test_em_check_accepts_str_or_list_and_returns_int() -> None:
    assert em_check("the eiffel tower!", "Eiffel Tower") == 1
    assert em_check("Eiffel", ["Tower", "Eiffel Tower"]) == 0
    assert em_check("Paris", ["Lyon", "paris", "Nice"]) == 1
    assert isinstance(em_check("x", ["x"]), int)
    assert em_check("anything", []) == 0


def test_em_check_the_the_matches_any_article_only_answer() -> None:
    # Upstream behaviour, kept on purpose: both sides normalise to the empty string.
    assert em_check("The The", ["The The"]) == 1
    assert em_check("a", ["The The"]) == 1
    assert em_check("The Cure", ["The The"]) == 0


def test_em_check_number_and_dash_forms() -> None:
    assert em_check("1,000", ["1000"]) == 1
    assert em_check("1990-1995", ["19901995"]) == 1
    assert em_check("1990\u20131995", ["1990-1995"]) == 0  # unicode dash is not folded


def test_subem_check() -> None:
    assert subem_check("It was in Paris, France.", ["paris"]) == 1
    assert subem_check("It was in Lyon.", ["paris", "nice"]) == 0
    assert subem_check("The answer is 1,874", "1874") == 1
    # Substring on characters, not tokens, as upstream.
    assert subem_check("Parisian", ["paris"]) == 1


def test_f1_partial_overlap_by_hand() -> None:
    # pred tokens: [eiffel, tower, paris]; gold tokens: [eiffel, tower] -> p=2/3, r=1, f1=0.8
    assert f1_score("The Eiffel Tower, Paris", "Eiffel Tower") == pytest.approx(0.8)
    # pred [new, york, city], gold [york] -> p=1/3, r=1 -> f1=0.5
    assert f1_score("New York City", "York") == pytest.approx(0.5)
    # repeated tokens count by multiplicity: pred [new, new], gold [new] -> p=1/2, r=1 -> 2/3
    assert f1_score("new new", "new") == pytest.approx(2 / 3)
    assert f1_score("Paris", "Paris") == 1.0
    assert f1_score("Lyon", "Paris") == 0.0
    assert f1_score("", "Paris") == 0.0


def test_f1_yes_no_noanswer_rule() -> None:
    assert f1_score("yes", "yes") == 1.0
    assert f1_score("Yes.", "no") == 0.0
    assert f1_score("yes", "yes it is") == 0.0  # token overlap, but the special rule wins
    assert f1_score("no answer", "noanswer") == 0.0  # two tokens: "no answer" is not special...
    assert f1_score("no, answer", "no answer") == 1.0


def test_max_f1_over_golds() -> None:
    assert max_f1("Eiffel Tower", ["Tower of London", "The Eiffel Tower"]) == 1.0
    # vs "Tower of London": pred [eiffel, tower], gold [tower, of, london] -> p=1/2, r=1/3 -> 0.4
    assert max_f1("Eiffel Tower", ["Tower of London"]) == pytest.approx(0.4)
    assert max_f1("Eiffel Tower", "Eiffel") == pytest.approx(2 / 3)
    assert max_f1("x", []) == 0.0
