"""`ScriptedPolicy`: a reference policy that needs no model.

It searches the question verbatim, then answers from the `<information>` block it got back:
- `answer="title"`: the title of the top passage (the floor any model should beat);
- `answer="entity"`: the name (or year) in the retrieved passages whose sentence shares the most
  words with the question, skipping names the question already contains: a crude one-hop reader.
Both are deterministic, so repeated runs and any concurrency give identical results.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from search_env.evaluation.transcript import Transcript

AnswerMode = Literal["title", "entity"]
NO_ANSWER = "unknown"

# One retrieved passage per line: `Doc i(Title: "t") text` (search_env.protocol.format_passages).
_DOC = re.compile(r"^Doc (\d+)\(Title: (.*?)\) (.*)$", re.MULTILINE)
_INFORMATION = re.compile(r"<information>(.*?)</information>", re.DOTALL)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_NAME = re.compile(r"[A-Z][\w'-]*(?:\s+(?:of\s+|and\s+|the\s+)?[A-Z][\w'-]*)*")
_YEAR = re.compile(r"\b\d{3,4}\b")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    {
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "by",
        "with",
        "from",
        "and",
        "or",
        "is",
        "was",
        "were",
        "be",
        "been",
        "are",
        "as",
        "its",
        "it",
        "his",
        "her",
        "their",
        "he",
        "she",
        "they",
        "this",
        "that",
        "which",
        "what",
        "who",
        "whom",
        "whose",
        "where",
        "when",
        "how",
        "did",
        "does",
        "do",
        "there",
        "than",
        "into",
        "often",
        "also",
        "later",
    }
)


@dataclass(frozen=True, slots=True)
class Passage:
    rank: int
    title: str
    text: str


def question_of(prompt: str) -> str:
    """The question in a Search-R1 prompt (the text after its last 'Question:')."""
    _, marker, after = prompt.rpartition("Question:")
    return (after if marker else prompt).strip()


def parse_information(observation: str) -> list[Passage]:
    """The passages of an `<information>` block, in rank order (empty if there is none)."""
    block = _INFORMATION.search(observation)
    if block is None:
        return []
    return [
        Passage(int(rank), title.strip().strip('"'), text.strip()) for rank, title, text in _DOC.findall(block.group(1))
    ]


class ScriptedPolicy:
    def __init__(self, answer: AnswerMode = "title"):
        if answer not in ("title", "entity"):
            raise ValueError(f"answer must be 'title' or 'entity', got {answer!r}")
        self.answer = answer
        self.name = "scripted" if answer == "title" else "scripted-entity"

    async def act(self, transcript: Transcript) -> str:
        question = question_of(transcript.prompt)
        observation = transcript.last_observation
        if observation is None:
            return f"<search> {question} </search>"
        passages = parse_information(observation)
        if not passages:
            return f"<answer> {NO_ANSWER} </answer>"
        reply = passages[0].title if self.answer == "title" else best_entity(question, passages)
        return f"<answer> {reply or NO_ANSWER} </answer>"


def _stems(text: str) -> set[str]:
    # A 5-letter prefix is stemmer enough for founded/founder, publish/published, employ/employed.
    return {w[:5] for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def _wants(question: str) -> Literal["year", "name", "any"]:
    q = question.lower()
    if q.startswith("when") or "what year" in q or "which year" in q:
        return "year"
    if q.startswith(("who", "which", "where")) or "whom" in q or "which city" in q:
        return "name"
    return "any"


def best_entity(question: str, passages: list[Passage]) -> str | None:
    """The candidate whose sentence best overlaps the question; earlier passages and sentences win ties."""
    q_lower = question.lower()
    q_stems = _stems(question)
    wants = _wants(question)
    best: tuple[tuple[int, int, int, int], str] | None = None
    for passage in passages:
        for s_index, sentence in enumerate(_SENTENCE_END.split(passage.text)):
            overlap = len(q_stems & _stems(sentence))
            found: list[tuple[int, str]] = []
            if wants != "year":
                found += [(m.start(), m.group(0)) for m in _NAME.finditer(sentence)]
            if wants != "name":
                found += [(m.start(), m.group(0)) for m in _YEAR.finditer(sentence)]
            for position, candidate in found:
                candidate = _trim(candidate)
                if not candidate or candidate.lower() in q_lower:
                    continue
                key = (overlap, -passage.rank, -s_index, -position)
                if best is None or key > best[0]:
                    best = (key, candidate)
    return best[1] if best else None


def _trim(candidate: str) -> str:
    """Drop capitalised function words that open a sentence ("The", "His", "Its ...")."""
    words = candidate.split()
    while words and words[0].lower() in _STOPWORDS:
        words = words[1:]
    return " ".join(words)
