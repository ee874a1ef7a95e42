"""Text to BM25 terms the way our Lucene indexes analyse it, in Python (for the bm25s backend).

Our Lucene indexes (pyserini's DefaultLuceneDocumentGenerator) and their queries use Anserini's
default English analyzer: StandardTokenizer -> EnglishPossessiveFilter -> LowerCaseFilter ->
StopFilter (Lucene's 33 English stopwords) -> PorterStemFilter. This mirrors it:
  - tokens: runs of word characters, kept whole across an apostrophe or a full stop between word
    characters ("don't", "u.s.a", "3.14") and a comma between digits ("1,000"), approximating
    Unicode word segmentation (UAX #29) as StandardTokenizer applies it; a CJK ideograph or kana is
    a token of its own, and a token over 255 characters is cut into 255-character pieces, as there;
  - a trailing possessive 's (or ’s) dropped; lower-cased; stopwords dropped;
  - stems from PyStemmer's "porter" (Snowball's port of the published Porter algorithm), with the
    "logi" -> "log" and "bli" -> "ble" rules of Porter's own reference code, which Lucene's
    PorterStemmer ports and Snowball leaves out ("technology": Lucene "technolog", Snowball
    "technologi"; "possibly": "possibl" / "possibli").
Known differences, all rare in English text: a full stop between a letter and a digit joins here
("a.1": Lucene "a" and "1"), and a run of katakana is one token there, one per character here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from search_env.query_sanitizer import _ONE_EACH  # the CJK ranges Lucene makes one term per character

# Lucene's EnglishAnalyzer.ENGLISH_STOP_WORDS_SET (= bm25s.stopwords.STOPWORDS_EN).
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not",
    "of", "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was",
    "will", "with",
})  # fmt: skip
_WORD = f"[^\\W{_ONE_EACH}]+"
_TOKEN = re.compile(f"[{_ONE_EACH}]|{_WORD}(?:(?:[.'’]|(?<=\\d),(?=\\d)){_WORD})*")
_MAX_TOKEN = 255  # Lucene's StandardTokenizer cuts longer tokens into pieces of this length
_POSSESSIVE = ("'s", "’s")
_MAX_MEMO = 1_000_000  # distinct tokens whose stems are kept; past it the memo starts afresh


def _vowels(word: str) -> list[bool]:
    """Porter's vowels: a, e, i, o, u, and y after a consonant."""
    out: list[bool] = []
    for i, ch in enumerate(word):
        out.append(ch in "aeiou" or (ch == "y" and i > 0 and not out[-1]))
    return out


def _measure(stem: str) -> int:
    """Porter's m: the number of vowel-consonant sequences in `stem`."""
    v = _vowels(stem)
    return sum(1 for a, b in zip(v, v[1:], strict=False) if a and not b)


def _cvc(stem: str) -> bool:
    """Porter's *o: ends consonant-vowel-consonant, the last not w, x or y."""
    v = _vowels(stem)
    return len(stem) >= 3 and not v[-3] and v[-2] and not v[-1] and stem[-1] not in "wxy"


def _reference_porter(stem: str) -> str:
    """Snowball's Porter stem as Lucene's (Porter's reference code's) would be. That code's step 2 also
    maps "logi" to "log" and "bli" to "ble" when m(rest) > 0 (the published algorithm: only "abli");
    steps 3-5 then run on the result: "log" is left alone, "...ble" may lose "ible" (m > 1) and the
    final e. Snowball's output ends in "logi" / "bli" exactly where its step 2 did."""
    if stem.endswith("logi") and _measure(stem[:-4]) > 0:
        return stem[:-1]
    if stem.endswith("bli") and not stem.endswith("abli") and _measure(stem[:-3]) > 0:
        word = stem[:-1] + "e"
        if word.endswith("ible") and _measure(word[:-4]) > 1:
            return word[:-4]
        m = _measure(word[:-1])
        if m > 1 or (m == 1 and not _cvc(word[:-1])):
            word = word[:-1]
        return word
    return stem


class LuceneEnglishAnalyzer:
    """`terms(text)` -> the stemmed terms Lucene's default English analyzer gives (see module doc).

    Stems are memoised per distinct token (a corpus has far fewer distinct tokens than tokens).
    """

    def __init__(self) -> None:
        import Stemmer  # PyStemmer

        self._stemmer = Stemmer.Stemmer("porter")
        self._stems: dict[str, str] = {}

    def tokens(self, text: str) -> list[str]:
        """Lower-cased tokens with possessives and stopwords dropped, before stemming."""
        out = []
        for token in _TOKEN.findall(text.lower()):
            pieces = (
                [token]
                if len(token) <= _MAX_TOKEN
                else [token[i : i + _MAX_TOKEN] for i in range(0, len(token), _MAX_TOKEN)]
            )
            for piece in pieces:
                if piece.endswith(_POSSESSIVE):
                    piece = piece[:-2]
                if piece and piece not in STOPWORDS:
                    out.append(piece)
        return out

    def terms(self, text: str) -> list[str]:
        stems = self._stems
        tokens = self.tokens(text)
        unknown = [t for t in dict.fromkeys(tokens) if t not in stems]
        if unknown:
            if len(stems) > _MAX_MEMO:
                stems.clear()
            stems.update(zip(unknown, map(_reference_porter, self._stemmer.stemWords(unknown)), strict=True))
        return [stems[t] for t in tokens]

    def terms_of(self, texts: Iterable[str]) -> list[list[str]]:
        return [self.terms(t) for t in texts]
