"""The generation backend protocol of the rollout engine, and the per-sequence stop rule.

A backend samples one turn for each of many prompts (token ids in, token ids out) and returns the
sampled ids exactly as sampled, cut right after the token that completes a stop string or after an
EOS (the EOS is kept: the policy chose it), with the sampler's log-prob of each token. Those
log-probs are only logged and compared; the loss always recomputes its own with the training model.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

#: Search-R1's turn ends: the env acts on the first complete <search> or <answer> block.
STOP_STRINGS: tuple[str, ...] = ("</search>", "</answer>")

FinishReason = Literal["stop", "eos", "length"]


@dataclass
class Generated:
    """One sampled turn: `token_ids[i]` was sampled with log-prob `logprobs[i]` under the sampler's
    (temperature / top-p processed) distribution."""

    token_ids: list[int]
    logprobs: list[float]
    #: "stop": a stop string completed; "eos": an EOS token was sampled; "length": ran out of tokens
    finish_reason: FinishReason = "length"
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.token_ids) != len(self.logprobs):
            raise ValueError(f"{len(self.token_ids)} token ids but {len(self.logprobs)} log-probs")

    def __len__(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class Generator(Protocol):
    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop_strings: Sequence[str] = STOP_STRINGS,
    ) -> list[Generated]:
        """One turn per prompt (in order); temperature 0 means greedy."""
        ...


def stop_cut(
    token_ids: Sequence[int],
    tokenizer: Any,
    stop_strings: Sequence[str] = STOP_STRINGS,
    eos_token_ids: Collection[int] = (),
) -> tuple[int, FinishReason]:
    """How many of `token_ids` a turn keeps, and why: up to and including the first EOS, or the
    token whose text completes the first stop string, whichever comes first; all of them otherwise.

    Stop strings are matched on decoded text (they can span tokens, or end inside one), and the
    shortest prefix whose text holds a stop string is found by bisection: a longer prefix's text
    extends a shorter one's, so "contains a stop string" is monotone in the prefix length.
    """
    ids = list(token_ids)
    end, reason = len(ids), "length"
    eos = set(eos_token_ids)
    for i, t in enumerate(ids):
        if t in eos:
            end, reason = i + 1, "eos"
            break

    def has_stop(n: int) -> bool:
        text = tokenizer.decode(ids[:n], skip_special_tokens=False)
        return any(s in text for s in stop_strings)

    if stop_strings and end > 0 and has_stop(end):
        lo, hi = 1, end  # has_stop(hi) holds; find the smallest such n
        while lo < hi:
            mid = (lo + hi) // 2
            if has_stop(mid):
                hi = mid
            else:
                lo = mid + 1
        if reason != "eos" or lo < end:
            end, reason = lo, "stop"
    return end, reason  # type: ignore[return-value]
