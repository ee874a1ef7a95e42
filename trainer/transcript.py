"""The token-level record of one episode: what the policy generated and what the env inserted.

Rollouts keep the sampled token ids as they are ("tokens in, tokens out": no decode/re-encode of the
policy's own text), so the ids the loss sees are the ids that were sampled. Env observations are
tokenised and appended; `gen_mask` marks the policy's tokens (Search-R1's info mask, kept
explicitly rather than inferred from pad ids) and `action_ids` numbers each turn's generated span,
which LLDS's action-level gate needs. The warm-start SFT builds its examples with the same class.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


def encode_prompt(tokenizer: Any, text: str) -> list[int]:
    """The prompt as the policy sees it: in the tokenizer's chat template when it has one (the env's
    prompt as the user message, Search-R1's way), else the plain text."""
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])


def encode_text(tokenizer: Any, text: str) -> list[int]:
    """An env observation (or a scripted action) as tokens, with no special tokens added."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


@dataclass
class Transcript:
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    gen_mask: list[bool] = field(default_factory=list)
    action_ids: list[int] = field(default_factory=list)
    #: the sampler's log-prob of each generated token (0.0 at env tokens); the loss recomputes its own
    sampler_logprobs: list[float] = field(default_factory=list)
    turns: int = 0

    def add_action(self, ids: list[int], logprobs: list[float] | None = None) -> None:
        self.turns += 1
        self.response_ids += ids
        self.gen_mask += [True] * len(ids)
        self.action_ids += [self.turns] * len(ids)
        self.sampler_logprobs += list(logprobs) if logprobs is not None else [0.0] * len(ids)

    def add_observation(self, ids: list[int]) -> None:
        self.response_ids += ids
        self.gen_mask += [False] * len(ids)
        self.action_ids += [0] * len(ids)
        self.sampler_logprobs += [0.0] * len(ids)

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids

    @property
    def num_generated(self) -> int:
        return sum(self.gen_mask)

    def last_action(self) -> tuple[int, int] | None:
        """[start, end) of the last generated span in response positions."""
        if not self.turns:
            return None
        start = self.action_ids.index(self.turns)
        return start, start + self.action_ids.count(self.turns)

    def answer_mask(self, tokenizer: Any) -> list[bool]:
        """True on the response tokens of the last action's `<answer>...</answer>` (tags included),
        the span LLDS-MA down-weights; all False when the last action holds no closed answer."""
        mask = [False] * len(self.response_ids)
        span = self.last_action()
        if span is None:
            return mask
        start, end = span
        ids = self.response_ids[start:end]
        # Character end of each token's text, from decoding growing prefixes (tokenizers merge bytes,
        # so a token's own decode is not always its share of the text).
        ends, text = [], ""
        for i in range(len(ids)):
            text = tokenizer.decode(ids[: i + 1], skip_special_tokens=False)
            ends.append(len(text))
        open_at = text.rfind(ANSWER_OPEN)
        close_at = text.find(ANSWER_CLOSE, open_at + len(ANSWER_OPEN)) if open_at >= 0 else -1
        if open_at < 0 or close_at < 0:
            return mask
        close_end = close_at + len(ANSWER_CLOSE)
        prev_end = 0
        for i, tok_end in enumerate(ends):
            if tok_end > open_at and prev_end < close_end:
                mask[start + i] = True
            prev_end = tok_end
        return mask
