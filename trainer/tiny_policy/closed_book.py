"""Closed-book guesses: warm-start examples that answer at once, without searching.

Search-R1 starts RL from a model that has never been taught to search: it often answers from
memory, and RL has to find out that searching pays. A warm start trained only on the scripted
search transcripts has nothing of that left to learn. Mixed with closed-book guesses (the same
question answered at once with a random answer of the train split, almost always wrong), it learns
both habits, chosen by its first token: sampled, it searches on about as many questions as its SFT
data did; greedy, the habit that is a little stronger wins. That choice does not depend on which
question it is, so what GRPO learns about it on the train split carries over to the test split.

Whether an example is a guess is drawn afresh each time it is drawn, so the model cannot tie
guessing to particular questions. Guesses join the full SFT stage only, not the first-action stage
that teaches copying the question into a search. Measured on the small world (greedy test EM,
100 questions): with half the full-stage examples guesses (configs/embedded.yaml), the warm start
scores 0.05 and GRPO+LLDS lifts it as it learns to search (see the README's Training section); with
40% it already searches on most questions (0.12) and GRPO did not lift it. Off by default
(`model.embedded_sft_closed_book`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from trainer.tiny_policy.scripted_trajectories import answer_action
from trainer.transcript import Transcript, encode_text


class ClosedBookGuesser:
    """Turns a transcript into its question answered at once with a random answer from a pool."""

    def __init__(self, answer_actions: Sequence[Sequence[int]]) -> None:
        self.answer_actions = [list(a) for a in answer_actions if a]
        if not self.answer_actions:
            raise ValueError("no answers to guess from")

    @classmethod
    def from_answers(cls, tokenizer: Any, answers: Sequence[str]) -> ClosedBookGuesser:
        """Guesses among `answers` (e.g. the train split's gold answers), each a whole answer action."""
        eos = [tokenizer.eos_token_id]
        return cls([encode_text(tokenizer, answer_action(a)) + eos for a in sorted(set(answers))])

    def __call__(self, transcript: Transcript, rng: random.Random) -> Transcript:
        guess = Transcript(prompt_ids=list(transcript.prompt_ids))
        guess.add_action(list(rng.choice(self.answer_actions)))
        return guess
