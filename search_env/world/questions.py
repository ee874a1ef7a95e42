"""Questions over the world's graph: 1- to 3-hop chains, phrased from templates, dealt to splits.

A chain starts at a named entity, follows relations (work -> creator -> employer ...) and asks a last
fact. Each hop's fact sits in one passage of that hop's entity, so the record lists those passages
in hop order; bridge entities never appear in the question and must be found by searching.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from search_env.qa_data import QARecord
from search_env.world import templates as T
from search_env.world.config import SPLITS, WorldConfig
from search_env.world.entities import Entity, weighted_choice

DATA_SOURCE = "searchgym-world"

# Facts a question may ask last, with weights: guessable ones (few possible values) are rare.
FINAL_WEIGHTS: dict[str, dict[str, float]] = {
    "person": {"birthplace": 3, "birth_year": 3, "employer": 2, "spouse": 1.5, "occupation": 0.4},
    "org": {"founder": 3, "founded": 3, "hq": 2.5, "industry": 0.4},
    "work": {"creator": 3, "year": 3, "publisher": 2, "genre": 0.4},
    "city": {"founded": 2, "river": 2, "landmark": 1, "region": 1, "country": 0.5},
    "region": {"country": 1},
}
# Relations a chain may walk through (to another entity that has its own passages).
BRIDGE_WEIGHTS: dict[str, dict[str, float]] = {
    "person": {"birthplace": 1, "employer": 1.2, "spouse": 0.5},
    "org": {"founder": 1.2, "hq": 1},
    "work": {"creator": 1.5, "publisher": 1},
}
# No city -> region bridge: a city's lead already names its country, so "the country of the region
# of X" would be a 3-hop question answerable in 2 hops.
_ENTITY_FACTS = {"birthplace", "employer", "spouse", "founder", "hq", "creator", "publisher", "region"}


class QuestionSampler:
    """Draws unique question chains per hop count and deals them to the splits."""

    def __init__(self, config: WorldConfig, entities: list[Entity]) -> None:
        self.config = config
        self.entities = entities
        self.rng = random.Random(config.seed * 7919 + 1)  # questions vary independently of prose
        self.starts = [e.index for e in entities if not e.distractor and e.kind in FINAL_WEIGHTS]
        self.bridge_starts = [e.index for e in entities if not e.distractor and e.kind in BRIDGE_WEIGHTS]
        self.seen: dict[tuple[Any, ...], None] = {}
        self.seen_text: dict[str, None] = {}

    def sample(self) -> dict[str, list[QARecord]]:
        cfg = self.config
        per_split = {split: _largest_remainder(size, cfg.hop_mix) for split, size in cfg.split_sizes().items()}
        pools: dict[int, list[dict[str, Any]]] = {}
        for hops in (1, 2, 3):
            needed = sum(counts[hops - 1] for counts in per_split.values())
            pools[hops] = self._draw(hops, needed)
        questions: dict[str, list[QARecord]] = {}
        for split in SPLITS:
            chosen: list[dict[str, Any]] = []
            for hops in (1, 2, 3):
                count = per_split[split][hops - 1]
                chosen.extend(pools[hops][:count])
                pools[hops] = pools[hops][count:]
            self.rng.shuffle(chosen)
            questions[split] = [
                QARecord(id=f"{split}_{i}", question=q["question"], golden_answers=q["answers"],
                         data_source=DATA_SOURCE, metadata=q["metadata"])
                for i, q in enumerate(chosen)
            ]
        return questions

    def _draw(self, hops: int, needed: int) -> list[dict[str, Any]]:
        drawn: list[dict[str, Any]] = []
        attempts = 0
        while len(drawn) < needed:
            attempts += 1
            if attempts > 200 * needed + 1000:
                raise RuntimeError(f"world too small for {needed} unique {hops}-hop questions")
            question = self._chain(hops)
            if question is not None:
                drawn.append(question)
        return drawn

    def _chain(self, hops: int) -> dict[str, Any] | None:
        rng, entities = self.rng, self.entities
        chain = [entities[rng.choice(self.starts if hops == 1 else self.bridge_starts)]]
        relations: list[str] = []
        for _ in range(hops - 1):
            here = chain[-1]
            options = {r: w for r, w in BRIDGE_WEIGHTS.get(here.kind, {}).items() if r in here.rels}
            if not options:
                return None
            relation = weighted_choice(rng, options)
            nxt = entities[here.rels[relation]]
            if any(e.index == nxt.index for e in chain) or nxt.kind not in FINAL_WEIGHTS:
                return None
            chain.append(nxt)
            relations.append(relation)
        last = chain[-1]
        finals = {f: w for f, w in FINAL_WEIGHTS[last.kind].items() if self._has_fact(last, f)}
        if relations and relations[-1] != "spouse":
            # "the director of X" or "the founder of a band" already tells the occupation.
            finals.pop("occupation", None)
        if not finals:
            return None
        final = weighted_choice(rng, finals)
        answer_entity, answers = self._answer(last, final)
        if answer_entity is not None and any(e.index == answer_entity.index for e in chain):
            return None
        key = (chain[0].index, tuple(relations), final)
        if key in self.seen:
            return None
        text = self._phrase(chain, relations, final)
        if text is None or text in self.seen_text:
            return None
        self.seen[key] = None
        self.seen_text[text] = None
        steps = [*zip(chain[:-1], relations, strict=True), (last, final)]
        return {
            "question": text,
            "answers": answers,
            "metadata": {
                "hops": hops,
                "type": ">".join(f"{e.kind}.{fact}" for e, fact in steps),
                "supporting_passages": [str(e.facts[fact]) for e, fact in steps],
                "entities": [e.name for e in chain],
            },
        }

    def _has_fact(self, entity: Entity, fact: str) -> bool:
        if fact == "industry":
            return "industry" in entity.attrs
        if fact == "country":
            return "country" in entity.facts
        if fact in _ENTITY_FACTS:
            return fact in entity.rels and fact in entity.facts
        return fact in entity.facts

    def _answer(self, entity: Entity, fact: str) -> tuple[Entity | None, list[str]]:
        entities = self.entities
        if fact == "country":
            region = entity if entity.kind == "region" else entities[entity.rels["region"]]
            target = entities[region.rels["country"]]
            return target, [target.name]
        if fact in _ENTITY_FACTS:
            target = entities[entity.rels[fact]]
            return target, [target.name]
        if fact == "river":
            river = entities[entity.rels["river"]]
            return river, [river.name, river.attrs["base"]]
        value = {
            "birth_year": entity.attrs.get("birth_year"), "founded": entity.attrs.get("founded"),
            "year": entity.attrs.get("year"), "occupation": entity.attrs.get("occupation"),
            "industry": entity.attrs.get("industry"), "genre": entity.attrs.get("genre"),
            "landmark": entity.attrs.get("landmark"),
        }[fact]
        return None, [str(value)]

    def _phrase(self, chain: list[Entity], relations: list[str], final: str) -> str | None:
        rng = self.rng
        subject = chain[0].name
        for source, relation in zip(chain[:-1], relations, strict=True):
            nps = _noun_phrases(source, relation, self.entities[source.rels[relation]])
            subject = rng.choice(nps).format(d=subject)
        last = chain[-1]
        templates = _question_templates(last, final, self.entities)
        if len(chain) > 1:
            templates = tuple(t for t in templates if t[1])
        if not templates:
            return None
        text = rng.choice(templates)[0].format(s=subject)
        return text[0].upper() + text[1:]


def _noun_phrases(source: Entity, relation: str, target: Entity) -> tuple[str, ...]:
    if source.kind == "person":
        return T.EMPLOYER_NPS[target.subtype] if relation == "employer" else T.PERSON_NPS[relation]
    if source.kind == "org":
        if source.subtype == "band":
            return T.BAND_NPS[relation]
        if source.subtype == "university" and relation == "hq":
            return T.UNIVERSITY_NPS["hq"]
        return T.ORG_NPS[relation]
    if source.kind == "work":
        return T.WORK_NPS[source.subtype][relation]
    return T.CITY_NPS[relation]


def _question_templates(entity: Entity, fact: str, entities: list[Entity]) -> T.Q:
    if entity.kind == "person":
        if fact == "employer":
            return T.EMPLOYER_QUESTIONS[entities[entity.rels["employer"]].subtype]
        return T.PERSON_QUESTIONS[fact]
    if entity.kind == "org":
        if entity.subtype == "band" and fact in T.BAND_QUESTIONS:
            return T.BAND_QUESTIONS[fact]
        if entity.subtype == "university" and fact == "hq":
            return T.UNIVERSITY_HQ
        return T.ORG_QUESTIONS[fact]
    if entity.kind == "work":
        return T.WORK_QUESTIONS[entity.subtype][fact]
    if entity.kind == "region":
        return T.REGION_QUESTIONS[fact]
    return T.CITY_QUESTIONS[fact]


def _largest_remainder(total: int, shares: Sequence[float]) -> list[int]:
    """Split `total` into integer parts proportional to `shares` (Hamilton's method)."""
    weight = sum(shares)
    exact = [total * s / weight for s in shares]
    counts = [int(x) for x in exact]
    order = sorted(range(len(shares)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts
