"""A small fictional wiki-18 corpus for the retrieval-backend tests, written by the tests themselves.

Every passage describes one invented place with a unique two-word name made of invented syllables,
so its name words occur in that passage only: a query of them has exactly one right answer.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

# Nothing may come from a model hub (tests/conftest.py sets the same; this module may be used alone).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

N_PASSAGES = 300

_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ae", "ou"]
_CODAS = ["", "n", "r", "l", "s", "th", "x", "m"]
_TOPICS = [
    ("lighthouse", "its rotating lamp and the storms it has survived"),
    ("orchard", "its pear trees and the cider pressed every autumn"),
    ("monastery", "its silent monks and an illuminated library"),
    ("glacier", "its blue ice caves and the sound of cracking ice"),
    ("railway", "its steam locomotives and a spiral viaduct"),
    ("vineyard", "its terraced slopes and a dark red wine"),
    ("observatory", "its bronze telescope and records of comets"),
    ("shipyard", "its wooden hulls and the launch festival"),
    ("salt mine", "its underground chapel carved from salt"),
    ("silk market", "its dyed fabrics and bargaining merchants"),
    ("clockworks", "its brass gears and a clock that plays music"),
    ("volcano", "its sulphur vents and black sand beaches"),
    ("beehive farm", "its honey and the beekeepers' summer parade"),
    ("opera house", "its painted ceiling and a famous soprano"),
    ("canal town", "its narrow boats and floating flower market"),
]
_REGIONS = ["northern", "southern", "eastern", "western", "central", "coastal", "highland"]


@dataclass(frozen=True)
class Entry:
    id: str
    name: str  # two invented words, unique to this passage
    topic: str
    contents: str


def _word(rng: random.Random) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(2)) + rng.choice(_CODAS)


def make_entries(n: int = N_PASSAGES, seed: int = 7, id_of=lambda row: str(row + 1)) -> list[Entry]:
    """n passages; ids "1".."n" (wiki-18 style) unless `id_of(row)` says otherwise."""
    rng = random.Random(seed)
    used: set[str] = set()
    entries = []
    for row in range(n):
        words = []
        while len(words) < 2:
            word = _word(rng)
            if word not in used:
                used.add(word)
                words.append(word)
        name = " ".join(w.capitalize() for w in words)
        topic, feature = _TOPICS[row % len(_TOPICS)]
        text = (
            f"{name} is {'an' if topic[0] in 'aeiou' else 'a'} {topic} in the {rng.choice(_REGIONS)} province. "
            f"It was established in {rng.randint(1200, 1950)} and is known for {feature}. "
            f"Visitors to {name} often describe the {topic} as unforgettable."
        )
        entries.append(Entry(id=id_of(row), name=name, topic=topic, contents=f'"{name}"\n{text}'))
    return entries


def write_corpus(path: Path, entries: list[Entry]) -> Path:
    lines = "".join(json.dumps({"id": e.id, "contents": e.contents}) + "\n" for e in entries)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(lines)
    else:
        path.write_text(lines, encoding="utf-8")
    return path

