"""The warm start's entity renaming: consistent within a transcript, kind-preserving, masks untouched."""

from __future__ import annotations

import random

import pytest

from trainer.tiny_policy.entity_swap import EntitySwapper, world_entity_kinds
from trainer.tiny_policy.tokenizer import world_entity_names
from trainer.tiny_policy.warm_start import warm_start
from trainer.transcript import Transcript

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PEOPLE, YEARS = [10, 11, 12, 13, 14], [20, 21, 22]


def _transcript() -> Transcript:
    t = Transcript(prompt_ids=[1, 10, 2, 11])  # "... 10 ... 11"
    t.add_action([3, 10, 4])  # searches 10
    t.add_observation([5, 10, 6, 20, 7, 11])  # reads about 10, year 20, and 11
    t.add_action([8, 20, 9])  # answers 20
    return t


def test_renaming_is_consistent_within_the_transcript_and_keeps_kinds():
    swapper = EntitySwapper([PEOPLE, YEARS])
    t = _transcript()
    for seed in range(20):
        new = swapper(t, random.Random(seed))
        ids, old = new.input_ids, t.input_ids
        mapping = {a: b for a, b in zip(old, ids, strict=True) if a != b}
        # every occurrence of an entity became the same new entity, of the same kind
        for a, b in zip(old, ids, strict=True):
            assert mapping.get(a, a) == b
            assert (a in PEOPLE) == (b in PEOPLE) and (a in YEARS) == (b in YEARS)
        # distinct entities stay distinct, everything else is untouched
        assert mapping.get(10, 10) != mapping.get(11, 11)
        assert [i for i in ids if i not in PEOPLE + YEARS] == [i for i in old if i not in PEOPLE + YEARS]
        assert new.gen_mask == t.gen_mask and new.action_ids == t.action_ids and new.turns == t.turns
    assert t.input_ids == _transcript().input_ids  # the original is not modified
    renamed = {swapper(t, random.Random(s)).response_ids[-2] for s in range(20)}
    assert len(renamed) > 1  # the answer really changes from draw to draw


def test_an_empty_swapper_and_a_swap_without_swapper_are_refused():
    with pytest.raises(ValueError, match="no entity tokens"):
        EntitySwapper([[], []])
    with pytest.raises(ValueError, match="needs a swapper"):
        warm_start(None, None, [_transcript()], entity_swap=0.5, progress=False)


def test_world_kinds_come_from_the_world_graph(small_world):
    from search_env.world.config import WorldConfig
    from search_env.world.generator import generate_world

    world = generate_world(WorldConfig.model_validate(small_world.info()["config"]))
    names = world_entity_names(small_world)
    kinds = world_entity_kinds(small_world, names)
    assert set(kinds) == set(names)
    person = next(e for e in world.entities if e.kind == "person" and e.name in kinds)
    assert kinds[person.name] == "person"
    assert all(kinds[n] == "number" for n in names if n.isdigit())
    assert {"city", "person", "number", "river"} <= set(kinds.values())


def test_warm_start_renames_every_example_it_draws(small_world, world_tokenizer):
    from trainer.tiny_policy.model import build_tiny_model

    tokenizer = world_tokenizer
    kinds = world_entity_kinds(small_world, world_entity_names(small_world))
    swapper = EntitySwapper.from_tokenizer(tokenizer, kinds)
    drawn: list[list[int]] = []

    def recording(t: Transcript, rng: random.Random) -> Transcript:
        new = swapper(t, rng)
        drawn.append(new.input_ids)
        return new

    name = next(n for n, k in kinds.items() if k == "person")
    t = Transcript(prompt_ids=tokenizer(f"Who is {name}?")["input_ids"])
    t.add_action(tokenizer(f"<answer> {name} </answer>")["input_ids"])
    model = build_tiny_model(tokenizer, "tiny", seed=0)
    warm_start(model, tokenizer, [t, t], steps=3, batch_size=2, lr=1e-3, max_len=64, entity_swap=1.0,
               swapper=recording, progress=False)
    assert len(drawn) == 6
    person = tokenizer.get_added_vocab()[name]
    assert sum(person in ids for ids in drawn) <= 1  # renamed (to itself at most by chance once)
