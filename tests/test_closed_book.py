"""Closed-book guesses in the warm start: the question answered at once, drawn afresh each time."""

from __future__ import annotations

import random

import pytest

from search_env.protocol import parse_action
from search_env.qa_data import load_qa
from trainer.config import ConfigError, load_config
from trainer.tiny_policy.closed_book import ClosedBookGuesser
from trainer.tiny_policy.warm_start import warm_start
from trainer.transcript import Transcript

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _searching(tokenizer, question: str) -> Transcript:
    t = Transcript(prompt_ids=tokenizer(f"Question: {question}")["input_ids"])
    t.add_action(tokenizer(f"<search> {question} </search>")["input_ids"])
    t.add_observation(tokenizer("<information> a passage </information>")["input_ids"])
    t.add_action(tokenizer("<answer> 1877 </answer>")["input_ids"] + [tokenizer.eos_token_id])
    return t


def test_a_guess_answers_the_same_question_at_once_from_the_pool(small_world, world_tokenizer):
    tokenizer = world_tokenizer
    answers = [r.golden_answers[0] for r in load_qa(small_world.qa["train"])]
    guesser = ClosedBookGuesser.from_answers(tokenizer, answers)
    original = _searching(tokenizer, "In what year was Haris Films founded?")
    before = original.input_ids
    guesses = [guesser(original, random.Random(seed)) for seed in range(30)]
    texts = set()
    for guess in guesses:
        assert guess.prompt_ids == original.prompt_ids and guess.turns == 1
        assert all(guess.gen_mask) and guess.response_ids[-1] == tokenizer.eos_token_id
        action = parse_action(tokenizer.decode(guess.response_ids, skip_special_tokens=True))
        assert action.kind == "answer" and action.content in set(answers)
        texts.add(action.content)
    assert len(texts) > 10  # random answers, not one
    assert original.input_ids == before  # the searching transcript is not modified


def test_a_guesser_without_answers_and_closed_book_without_guesser_are_refused():
    with pytest.raises(ValueError, match="no answers to guess from"):
        ClosedBookGuesser([])
    with pytest.raises(ValueError, match="closed_book > 0 needs a guesser"):
        warm_start(None, None, [Transcript(prompt_ids=[1])], closed_book=0.5, progress=False)
    with pytest.raises(ConfigError, match=r"model\.embedded_sft_closed_book: Input should be less than 1"):
        load_config(None, ["model.embedded_sft_closed_book=1"])


def test_warm_start_draws_guesses_at_the_given_share_in_the_full_stage_only(world_tokenizer):
    from trainer.tiny_policy.model import build_tiny_model

    tokenizer = world_tokenizer
    guesser = ClosedBookGuesser.from_answers(tokenizer, ["1877", "Haris Films"])
    replaced: list[int] = []  # turns of each transcript a guess replaced

    def recording(t: Transcript, rng: random.Random) -> Transcript:
        replaced.append(t.turns)
        return guesser(t, rng)

    t = _searching(tokenizer, "In what year was Haris Films founded?")
    model = build_tiny_model(tokenizer, "tiny", seed=0)
    # 4 first-action steps (prefixes: 1 turn), then 20 full steps of 4 examples: 80 full draws
    warm_start(model, tokenizer, [t] * 4, steps=20, batch_size=4, first_action_steps=4, first_action_batch_size=4,
               lr=1e-3, max_len=64, closed_book=0.5, guesser=recording, progress=False)
    assert set(replaced) == {t.turns}  # never a first-action prefix: that stage teaches copying
    assert 20 <= len(replaced) <= 60  # ~40 of 80; all or none would mean the share is ignored
    replaced.clear()
    warm_start(model, tokenizer, [t, t], steps=5, batch_size=2, lr=1e-3, max_len=64, closed_book=0.0,
               guesser=recording, progress=False)
    assert replaced == []
