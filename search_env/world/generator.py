"""A deterministic, seeded generator of a fictional encyclopedia (its questions: questions.py).

The world is a graph of countries, regions, cities, rivers, people, organisations and works. Every
fact is written into exactly one "supporting" passage of its entity (wiki-18 style: all passages of
an entity carry its name as title), and distractor pages (look-alike names, disambiguation pages,
lists, award pages) mention entities without giving the asked facts. Questions walk the graph for
1 to 3 hops; each records the passages that hold its facts, in hop order.

Only `random.Random(seed)` drives choices and no set is ever iterated, so one seed gives the same
bytes on every run and platform.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from search_env.corpus import Passage, format_contents
from search_env.qa_data import QARecord
from search_env.world import templates as T
from search_env.world.config import WorldConfig, resolve_config
from search_env.world.entities import Entity, weighted_choice
from search_env.world.names import (
    CITY_ENDINGS,
    COUNTRY_ENDINGS,
    REGION_ENDINGS,
    NameForge,
    demonym,
    indefinite_article,
    near_name,
)
from search_env.world.questions import QuestionSampler

LAST_YEAR = 2024  # the world's present: no event is dated after it
LAST_BIRTH = 1975
FOUNDED_BY = LAST_YEAR - 10  # organisations are at least this old, so works and staff can follow


@dataclass
class World:
    config: WorldConfig
    entities: list[Entity]
    passages: list[Passage]
    questions: dict[str, list[QARecord]]

    def counts(self) -> dict[str, int]:
        counts = {"passages": len(self.passages), "entities": len(self.entities)}
        counts.update({split: len(records) for split, records in self.questions.items()})
        return counts


def generate_world(config: str | WorldConfig = "default", seed: int | None = None) -> World:
    """Build the world of a preset name or config in memory (the default preset takes ~2 s)."""
    config = resolve_config(config, seed)
    builder = _WorldBuilder(config)
    builder.build_graph()
    builder.write_passages()
    questions = QuestionSampler(config, builder.entities).sample()
    passages = [Passage(id=str(i), contents=format_contents(title, text))
                for i, (title, text) in enumerate(builder.passages)]
    return World(config=config, entities=builder.entities, passages=passages, questions=questions)


def _join(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


class _WorldBuilder:
    """Draws the entity graph, then writes its passages; keeps everything in creation order."""

    def __init__(self, config: WorldConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.forge = NameForge(self.rng)
        self.entities: list[Entity] = []
        self.by_kind: dict[str, list[int]] = {}
        self.passages: list[tuple[str, str]] = []

    # -- graph --------------------------------------------------------------------------------

    def add(self, kind: str, name: str, subtype: str = "", distractor: bool = False, **attrs: Any) -> Entity:
        entity = Entity(index=len(self.entities), kind=kind, name=name, subtype=subtype, attrs=attrs,
                        distractor=distractor)
        self.entities.append(entity)
        self.by_kind.setdefault(kind, []).append(entity.index)
        return entity

    def of_kind(self, kind: str) -> list[Entity]:
        return [self.entities[i] for i in self.by_kind.get(kind, [])]

    def build_graph(self) -> None:
        self._places()
        self._people()
        self._organisations()
        self._employment_and_marriage()
        self._works()
        self._distractor_entities()

    def _places(self) -> None:
        cfg, rng, forge = self.config, self.rng, self.forge
        countries = [self.add("country", forge.unique(lambda: forge.word(2, 2, rng.choice(COUNTRY_ENDINGS))))
                     for _ in range(cfg.n_countries)]
        regions = []
        for i in range(max(cfg.n_regions, cfg.n_countries)):
            region = self.add("region", forge.unique(lambda: forge.word(2, 2, rng.choice(REGION_ENDINGS))))
            region.rels["country"] = countries[i % len(countries)].index
            regions.append(region)
        rivers_by_country: dict[int, list[Entity]] = {}
        for i in range(max(len(countries), cfg.n_cities // 3)):
            base = forge.unique(lambda: forge.word(2, 2))
            river = self.add("river", forge.unique(lambda b=base: f"{b} River"), base=base)
            rivers_by_country.setdefault(countries[i % len(countries)].index, []).append(river)
        for i in range(cfg.n_cities):
            # Every region gets a city first, then the rest spread at random.
            region = regions[i] if i < len(regions) else rng.choice(regions)
            city = self.add("city", forge.unique(lambda: forge.word(2, 3, rng.choice(CITY_ENDINGS))),
                            founded=rng.randint(700, 1850),
                            population=rng.randrange(8, 900) * 1000 + rng.randrange(1000))
            city.rels["region"] = region.index
            country = region.rels["country"]
            city.attrs["country"] = country
            city.rels["river"] = rng.choice(rivers_by_country[country]).index
            landmark = forge.unique(lambda: f"{forge.word(2, 3)} {rng.choice(T.LANDMARK_KINDS)}")
            city.attrs["landmark"] = landmark
            city.attrs["landmark_year"] = rng.randint(city.attrs["founded"] + 50, 1990)
        for country in countries:
            cities = [c for c in self.of_kind("city") if c.attrs["country"] == country.index]
            country.rels["capital"] = rng.choice(cities).index if cities else self.by_kind["city"][0]

    def _people(self) -> None:
        cfg, rng, forge = self.config, self.rng, self.forge
        given = forge.word_pool(max(12, cfg.n_people // 5), 2, 2)
        surnames = forge.word_pool(max(8, cfg.n_people // 2), 2, 3)
        # Only these (claimed) surnames get disambiguation pages: look-alike surnames are not claimed.
        self.surnames = dict.fromkeys(surnames)
        cities = self.by_kind["city"]
        for _ in range(cfg.n_people):
            name = forge.unique(lambda: f"{rng.choice(given)} {rng.choice(surnames)}")
            person = self.add("person", name, occupation=weighted_choice(rng, T.OCCUPATION_WEIGHTS),
                              birth_year=rng.randint(1790, LAST_BIRTH), he=rng.random() < 0.5)
            person.attrs["surname"] = name.split(" ", 1)[1]
            person.rels["birthplace"] = rng.choice(cities)

    def _organisations(self) -> None:
        cfg, rng, forge = self.config, self.rng, self.forge
        people = self.of_kind("person")
        by_subtype_people = {
            sub: [p for p in people if sub in T.OCCUPATIONS[p.attrs["occupation"]]] for sub in T.ORG_WEIGHTS
        }
        subtypes = list(T.ORG_WEIGHTS)
        for i in range(cfg.n_orgs):
            # Every subtype exists at least once so every occupation and work kind finds an employer.
            subtype = subtypes[i] if i < len(subtypes) else weighted_choice(rng, T.ORG_WEIGHTS)
            base = forge.word(2, 3)
            name = forge.unique(lambda b=base, s=subtype: rng.choice(T.ORG_SUFFIXES[s]).format(w=b))
            founder = rng.choice(by_subtype_people[subtype] or people)
            born = founder.attrs["birth_year"]
            org = self.add("org", name, subtype=subtype, base=base,
                           founded=founder.attrs["birth_year"] + rng.randint(22, min(55, FOUNDED_BY - born)))
            if subtype == "company":
                org.attrs["industry"] = rng.choice(T.INDUSTRIES)
            org.rels["founder"] = founder.index
            org.rels["hq"] = rng.choice(self.by_kind["city"])

    def _employment_and_marriage(self) -> None:
        rng = self.rng
        orgs_by_subtype: dict[str, list[Entity]] = {}
        for org in self.of_kind("org"):
            orgs_by_subtype.setdefault(org.subtype, []).append(org)
        people = self.of_kind("person")
        for person in people:
            if rng.random() < 0.1:
                continue  # some people have no employer: not every chain can continue
            choices = [o for sub in T.OCCUPATIONS[person.attrs["occupation"]] for o in orgs_by_subtype.get(sub, [])]
            if not choices:
                continue
            # Prefer an organisation that existed during the person's working life.
            for _ in range(4):
                org = rng.choice(choices)
                if org.attrs["founded"] <= person.attrs["birth_year"] + 45:
                    break
            person.rels["employer"] = org.index
            person.attrs["joined"] = max(person.attrs["birth_year"] + 20, org.attrs["founded"] + 1)
        singles = [p for p in people if rng.random() < 0.4]
        rng.shuffle(singles)
        for a, b in zip(singles[0::2], singles[1::2], strict=False):
            a.rels["spouse"] = b.index
            b.rels["spouse"] = a.index
            year = max(a.attrs["birth_year"], b.attrs["birth_year"]) + rng.randint(19, 35)
            a.attrs["married"] = b.attrs["married"] = year

    def _works(self) -> None:
        cfg, rng, forge = self.config, self.rng, self.forge
        people = self.of_kind("person")
        creators = {sub: [p for p in people if p.attrs["occupation"] in occs] or people
                    for sub, occs in T.CREATORS.items()}
        publishers = {sub: [o for o in self.of_kind("org") if o.subtype == T.PUBLISHER_SUBTYPE[sub]]
                      for sub in T.CREATORS}
        for _ in range(cfg.n_works):
            subtype = weighted_choice(rng, T.WORK_WEIGHTS)
            creator = rng.choice(creators[subtype])
            publisher = rng.choice(publishers[subtype] or self.of_kind("org"))
            earliest = max(creator.attrs["birth_year"] + 22, publisher.attrs["founded"] + 1)
            year = earliest + rng.randint(0, min(30, LAST_YEAR - earliest))
            work = self.add("work", forge.unique(forge.title), subtype=subtype, year=year,
                            genre=rng.choice(T.GENRES[subtype]))
            work.rels["creator"] = creator.index
            work.rels["publisher"] = publisher.index

    def _distractor_entities(self) -> None:
        """Look-alikes of real people and organisations, with their own (different) facts."""
        rng, forge = self.rng, self.forge
        cities = self.by_kind["city"]
        for person in self.of_kind("person"):
            if rng.random() >= 0.08:
                continue
            first, surname = person.name.split(" ", 1)
            name = forge.maybe_unique(lambda f=first, s=surname: f"{f} {near_name(rng, s)}", attempts=20)
            if name is None:
                continue
            twin = self.add("person", name, distractor=True, occupation=person.attrs["occupation"],
                            birth_year=person.attrs["birth_year"] + rng.choice((-3, -2, -1, 1, 2, 3)),
                            he=rng.random() < 0.5, surname=name.split(" ", 1)[1], lookalike=person.index)
            twin.rels["birthplace"] = rng.choice(cities)
        for org in self.of_kind("org"):
            if rng.random() >= 0.05 or org.subtype == "band":
                continue
            name = forge.maybe_unique(
                lambda o=org: rng.choice(T.ORG_SUFFIXES[o.subtype]).format(w=o.attrs["base"]), attempts=20)
            if name is None:
                continue
            twin = self.add("org", name, subtype=org.subtype, distractor=True, base=org.attrs["base"],
                            founded=org.attrs["founded"] + rng.randint(-15, 15), lookalike=org.index)
            if "industry" in org.attrs:
                twin.attrs["industry"] = org.attrs["industry"]
            twin.rels["hq"] = rng.choice(cities)

    # -- passages -----------------------------------------------------------------------------

    def name_of(self, index: int) -> str:
        return self.entities[index].name

    def fill(self, template: str, **ctx: Any) -> str:
        return template.format(**ctx)

    def pick(self, templates: Sequence[str]) -> str:
        return self.rng.choice(templates)

    def emit(self, title: str, sentences: list[str]) -> int:
        self.passages.append((title, " ".join(sentences)))
        return len(self.passages) - 1

    def other_person(self, entity: Entity) -> str:
        people = self.by_kind["person"]
        while True:
            other = self.entities[self.rng.choice(people)]
            if other.index != entity.index:
                return other.name

    def write_entity(self, entity: Entity, identity: str, identity_facts: Sequence[str],
                     facts: list[tuple[str, str]], openers: Sequence[str] | dict[str, tuple[str, ...]],
                     fillers: Sequence[str],
                     ctx: dict[str, Any]) -> None:
        """Lay one entity's facts over 1-3 passages: the lead holds the identity sentence.

        `facts` are (fact name, sentence); each fact lands in exactly one passage, recorded in
        `entity.facts` so questions can cite it.
        """
        rng = self.rng
        wanted = rng.choices((1, 2, 3), weights=(0.3, 0.45, 0.25))[0]
        n_passages = max(1, min(wanted, 1 + len(facts)))
        rng.shuffle(facts)
        slots: list[list[tuple[str, str]]] = [[] for _ in range(n_passages)]
        for i, fact in enumerate(facts):
            slots[1 + i if 1 + i < n_passages else rng.randrange(n_passages)].append(fact)
        for number, slot in enumerate(slots):
            if number == 0:
                sentences = [identity]
            else:
                # Section passages open with the entity's full name, as wiki sections name their topic.
                pool = openers.get(slot[0][0], ()) if isinstance(openers, dict) else openers
                sentences = [self.fill(self.pick(pool or T.GENERIC_OPENERS), **ctx)]
            sentences.extend(sentence for _, sentence in slot)
            for filler in rng.sample(fillers, k=rng.randint(1, 3)):
                sentences.append(self.fill(filler, other=self.other_person(entity), **ctx))
            index = self.emit(entity.name, sentences)
            for fact_name in (identity_facts if number == 0 else ()):
                entity.facts[fact_name] = index
            for fact_name, _ in slot:
                entity.facts[fact_name] = index

    def write_passages(self) -> None:
        for entity in self.entities:
            # Rivers have no page of their own: cities state which river they lie on.
            writer = getattr(self, f"_write_{entity.kind}", None)
            if writer is not None:
                writer(entity)
        self._write_disambiguation_pages()
        self._write_lists()
        self._write_awards()

    def _person_ctx(self, person: Entity) -> dict[str, Any]:
        rng = self.rng
        city = self.entities[person.rels["birthplace"]]
        region = self.entities[city.rels["region"]]
        country = self.entities[region.rels["country"]].name
        year = person.attrs["birth_year"]
        occupation = person.attrs["occupation"]
        adjective = rng.choice(T.PERSON_ADJECTIVES)
        siblings = rng.randint(2, 6)
        return {
            "name": person.name, "surname": person.attrs["surname"], "year": year, "occupation": occupation,
            "be": "was" if year < 1935 else "is", "adj": adjective, "art_adj": indefinite_article(adjective),
            "nat": demonym(country), "art_nat": indefinite_article(demonym(country)),
            "art_occ": indefinite_article(occupation), "country": country, "city": city.name,
            "region": region.name, "Pron": "He" if person.attrs["he"] else "She",
            "poss": "his" if person.attrs["he"] else "her", "Poss": "His" if person.attrs["he"] else "Her",
            "age": rng.randint(14, 24), "household": rng.choice(T.HOUSEHOLDS), "siblings": siblings,
            "ordinal": T.ORDINALS[rng.randrange(min(siblings, len(T.ORDINALS)))],
            "interest": rng.choice(T.INTERESTS), "quality": rng.choice(T.QUALITIES),
        }

    def _write_person(self, person: Entity) -> None:
        rng = self.rng
        ctx = self._person_ctx(person)
        if person.distractor:
            lookalike = self.entities[person.attrs["lookalike"]]
            sentences = [f"{person.name} (born {ctx['year']}) {ctx['be']} {ctx['art_nat']} {ctx['nat']} "
                         f"{ctx['occupation']} from {ctx['city']}."]
            if rng.random() < 0.5:
                sentences.append(f"{person.name} is not to be confused with {lookalike.name}.")
            sentences.append(self.fill(self.pick(T.PERSON_FILLERS), other=self.other_person(person), **ctx))
            person.facts["identity"] = self.emit(person.name, sentences)
            return
        facts = [("birthplace", self.fill(self.pick(T.PERSON_BIRTHPLACE), **ctx))]
        if "employer" in person.rels:
            org = self.entities[person.rels["employer"]]
            joined = person.attrs["joined"]
            facts.append(("employer", self.fill(self.pick(T.PERSON_EMPLOYER[org.subtype]), org=org.name,
                                                y1=joined, y2=min(LAST_YEAR, joined + rng.randint(3, 30)),
                                                n=rng.randint(3, 30), **ctx)))
        if "spouse" in person.rels:
            facts.append(("spouse", self.fill(self.pick(T.PERSON_SPOUSE), spouse=self.name_of(person.rels["spouse"]),
                                              y1=person.attrs["married"], **ctx)))
        identity = self.fill(self.pick(T.PERSON_IDENTITY), **ctx)
        self.write_entity(person, identity, ("birth_year", "occupation"), facts, T.PERSON_OPENERS,
                          T.PERSON_FILLERS, ctx)

    def _write_city(self, city: Entity) -> None:
        rng = self.rng
        region = self.entities[city.rels["region"]]
        ctx = {
            "name": city.name, "region": region.name, "country": self.name_of(region.rels["country"]),
            "size": rng.choice(("small", "large", "coastal", "historic", "industrial")),
            "year": city.attrs["founded"], "origin": rng.choice(T.ORIGINS),
            "river": self.name_of(city.rels["river"]), "landmark": city.attrs["landmark"],
            "y1": city.attrs["landmark_year"], "population": f"{city.attrs['population']:,}",
            "economy": rng.choice(T.ECONOMIES), "climate": rng.choice(T.CLIMATES),
        }
        facts = [
            ("founded", self.fill(self.pick(T.CITY_FOUNDED), **ctx)),
            ("river", self.fill(self.pick(T.CITY_RIVER), **ctx)),
            ("landmark", self.fill(self.pick(T.CITY_LANDMARK), **ctx)),
        ]
        identity = self.fill(self.pick(T.CITY_IDENTITY), **ctx)
        self.write_entity(city, identity, ("region", "country"), facts, T.CITY_OPENERS, T.CITY_FILLERS, ctx)

    def _write_region(self, region: Entity) -> None:
        rng = self.rng
        cities = [self.entities[i].name for i in self.by_kind["city"]
                  if self.entities[i].rels["region"] == region.index]
        country = self.name_of(region.rels["country"])
        sentences = [f"{region.name} is a region of {country}."]
        if cities:
            sentences.append(f"Its cities include {_join(rng.sample(cities, k=min(4, len(cities))))}.")
        sentences.append(f"The region is known for its {rng.choice(T.LANDSCAPES)}.")
        region.facts["country"] = self.emit(region.name, sentences)

    def _write_country(self, country: Entity) -> None:
        regions = [self.entities[i].name for i in self.by_kind["region"]
                   if self.entities[i].rels["country"] == country.index]
        sentences = [f"{country.name} is a country whose capital is {self.name_of(country.rels['capital'])}.",
                     f"It is divided into the regions of {_join(regions[:12])}."]
        country.facts["identity"] = self.emit(country.name, sentences)

    def _write_org(self, org: Entity) -> None:
        rng = self.rng
        kind = T.ORG_KIND_WORD[org.subtype]
        industry = org.attrs.get("industry", "")
        ctx = {
            "name": org.name, "city": self.name_of(org.rels["hq"]), "kind": kind, "industry": industry,
            "art_ind": indefinite_article(industry), "year": org.attrs["founded"],
            "staff": rng.randrange(2, 400) * 10, "decade": org.attrs["founded"] // 10 * 10 + 10 * rng.randint(1, 4),
            "emblem": rng.choice(T.EMBLEMS),
        }
        fillers = T.BAND_FILLERS if org.subtype == "band" else T.ORG_FILLERS
        identity = self.fill(self.pick(T.ORG_IDENTITY[org.subtype]), **ctx)
        if org.distractor:
            sentences = [identity, f"It was founded in {ctx['year']}."]
            sentences.append(self.fill(self.pick(fillers), other=self.other_person(org), **ctx))
            org.facts["identity"] = self.emit(org.name, sentences)
            return
        band = org.subtype == "band"
        founder = self.name_of(org.rels["founder"])
        facts = [
            ("founded", self.fill(self.pick(T.BAND_FOUNDED if band else T.ORG_FOUNDED), **ctx)),
            ("founder", self.fill(self.pick(T.BAND_FOUNDER if band else T.ORG_FOUNDER), founder=founder, **ctx)),
        ]
        self.write_entity(org, identity, ("hq", "industry"), facts, T.ORG_OPENERS, fillers, ctx)

    def _write_work(self, work: Entity) -> None:
        rng = self.rng
        genre = work.attrs["genre"]
        ctx = {
            "name": work.name, "creator": self.name_of(work.rels["creator"]), "genre": genre,
            "art_genre": indefinite_article(genre), "year": work.attrs["year"],
            "org": self.name_of(work.rels["publisher"]), "kind": work.subtype,
            "quality": rng.choice(T.QUALITIES), "reception": rng.choice(T.RECEPTIONS),
        }
        facts = [
            ("year", self.fill(self.pick(T.WORK_YEAR[work.subtype]), **ctx)),
            ("publisher", self.fill(self.pick(T.WORK_PUBLISHER[work.subtype]), **ctx)),
        ]
        identity = self.fill(self.pick(T.WORK_IDENTITY[work.subtype]), **ctx)
        self.write_entity(work, identity, ("creator", "genre"), facts, T.WORK_OPENERS, T.WORK_FILLERS, ctx)

    def _write_disambiguation_pages(self) -> None:
        """A page per surname held by several people: names, birth years, occupations only."""
        holders: dict[str, list[Entity]] = {}
        for person in self.of_kind("person"):
            holders.setdefault(person.attrs["surname"], []).append(person)
        for surname, people in holders.items():
            if len(people) < 2 or surname not in self.surnames:
                continue
            entries = [f"{p.name} (born {p.attrs['birth_year']}), {p.attrs['occupation']}" for p in people[:8]]
            self.emit(surname, [f"{surname} is a surname. Notable people with the surname include:",
                                "; ".join(entries) + "."])

    def _write_lists(self) -> None:
        """'List of novelists' style pages: many names, no facts, chunked like wiki-18."""
        by_occupation: dict[str, list[str]] = {}
        for person in self.of_kind("person"):
            by_occupation.setdefault(person.attrs["occupation"], []).append(person.name)
        for occupation, names in by_occupation.items():
            names = sorted(names)
            for start in range(0, len(names), 12):
                chunk = names[start : start + 12]
                self.emit(f"List of {occupation}s",
                          [f"The following {occupation}s have entries in this encyclopedia: {_join(chunk)}."])

    def _write_awards(self) -> None:
        """Prize pages naming recipients with years: years and names close to, but not, the facts asked."""
        rng, forge = self.rng, self.forge
        people = [p for p in self.of_kind("person") if not p.distractor]
        for _ in range(max(2, len(people) // 40)):
            name = forge.unique(lambda: f"{forge.word(2, 3)} {rng.choice(T.AWARD_KINDS)}")
            since = rng.randint(1850, 1960)
            recipients = sorted(rng.sample(people, k=min(4, len(people))), key=lambda p: p.attrs["birth_year"])
            years = [min(LAST_YEAR, max(since + rng.randint(0, 12), p.attrs["birth_year"] + rng.randint(25, 60)))
                     for p in recipients]
            listed = [f"{p.name} ({year})" for p, year in zip(recipients, years, strict=True)]
            field_word = rng.choice(T.AWARD_FIELDS)
            award = self.add("award", name, distractor=True)
            award.facts["identity"] = self.emit(name, [
                f"The {name} is {indefinite_article(field_word)} {field_word} prize awarded in "
                f"{self.name_of(rng.choice(self.by_kind['city']))} since {since}.",
                f"Recipients have included {_join(listed)}.",
            ])
