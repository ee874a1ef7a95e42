"""The nodes of the world's graph, and the one weighted draw every part of the generator uses."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class Entity:
    index: int
    kind: str  # country, region, city, river, person, org, work, award
    name: str
    subtype: str = ""  # org: company/university/...; work: novel/film/album
    attrs: dict[str, Any] = field(default_factory=dict)
    rels: dict[str, int] = field(default_factory=dict)  # relation -> entity index
    facts: dict[str, int] = field(default_factory=dict)  # fact -> index of the passage stating it
    distractor: bool = False


def weighted_choice(rng: random.Random, weights: dict[str, float]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]
