"""Renaming a transcript's entities at random, so the warm start must read instead of recalling.

Trained on the scripted transcripts as they are, the tiny policy learns its train questions by heart
(greedy EM 0.62 on train, 0.18 on test): nothing makes reading a passage cheaper than remembering.
With every name in a transcript (question, searches, passages, answer) replaced by a random name of
the same kind (a person for a person, a number for a number), consistently within the transcript
and afresh each time it is drawn, no answer can be remembered. Names are single tokens (see
tokenizer.py), so the swap substitutes token ids and the transcript stays a well-formed episode of a
renamed world.

Measured on the small world (greedy, 100 questions each): at 900 SFT steps, half the examples
renamed gave train EM 0.29 and test EM 0.17, all of them train 0.05 and test 0.15; all of them at
3,000 steps, train 0.20 and test 0.22 (without renaming: 0.62 and 0.18). Kinds matter: renaming any
name to any name (numbers only to numbers) gave test EM 0.10 (half) and 0.02 (all) at 900 steps.
Off by default (`model.embedded_sft_entity_swap`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from search_env.world.config import WorldConfig
from search_env.world.store import WorldPaths
from trainer.transcript import Transcript


class EntitySwapper:
    """Consistent random renaming of the entity tokens in a transcript, each within its pool (kind).

    A city stays a city and a year a year ("founded in 1877" never becomes "founded in Kizea"), so
    the kind of the answer stays readable from the question.
    """

    def __init__(self, pools: Sequence[Sequence[int]]) -> None:
        self.pools = [sorted(set(pool)) for pool in pools if pool]
        if not self.pools:
            raise ValueError("no entity tokens to swap: build the tokenizer with entity_tokens=True")
        self.pool_of = {i: k for k, pool in enumerate(self.pools) for i in pool}

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, kinds: dict[str, str]) -> EntitySwapper:
        """The swapper over `kinds` (entity name -> kind), as ids of `tokenizer`'s added tokens."""
        added = tokenizer.get_added_vocab()
        pools: dict[str, list[int]] = {}
        for name, kind in kinds.items():
            if name in added:
                pools.setdefault(kind, []).append(added[name])
        return cls([pools[k] for k in sorted(pools)])

    def mapping(self, ids: Sequence[int], rng: random.Random) -> dict[int, int]:
        """A random injective renaming of the entity ids in `ids`, within each pool."""
        present: list[list[int]] = [[] for _ in self.pools]
        for i in dict.fromkeys(ids):  # first-seen order: the same rng state gives the same renaming
            if i in self.pool_of:
                present[self.pool_of[i]].append(i)
        out: dict[int, int] = {}
        for pool, found in zip(self.pools, present, strict=True):
            if found:
                out.update(zip(found, rng.sample(pool, min(len(found), len(pool))), strict=False))
        return out

    def __call__(self, transcript: Transcript, rng: random.Random) -> Transcript:
        """`transcript` with its entities renamed (a new object; masks and action spans unchanged)."""
        new = self.mapping(transcript.input_ids, rng)
        return replace(
            transcript,
            prompt_ids=[new.get(i, i) for i in transcript.prompt_ids],
            response_ids=[new.get(i, i) for i in transcript.response_ids],
        )


def world_entity_kinds(world: WorldPaths, names: Sequence[str]) -> dict[str, str]:
    """`names` -> their kind in the world (person, city, org:company, landmark, number, ...): the
    world is regenerated in memory from its config (a second for the small world)."""
    from search_env.world.generator import generate_world

    kinds: dict[str, str] = {}
    for entity in generate_world(WorldConfig.model_validate(world.info()["config"])).entities:
        kinds[entity.name] = f"{entity.kind}:{entity.subtype}" if entity.subtype else entity.kind
        if "landmark" in entity.attrs:
            kinds[str(entity.attrs["landmark"])] = "landmark"
    return {name: "number" if name.isdigit() else kinds.get(name, "other") for name in names}
