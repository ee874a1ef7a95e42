"""The one check of a turn budget (`max_turns`: turns per episode), shared by every entry point that takes one.

The env, the vector and remote envs, the env server's session options, the trainer config, the rollout
engine and the eval commands all call `check_turn_budget`, so a budget of 0 (or a negative one, or a
non-integer) is refused everywhere with the same one-line message instead of being accepted by some
(the rollout engine used to play 0 as 1) and refused by others.
"""

from __future__ import annotations

from typing import Any

#: the largest turn budget any entry point accepts (the trainer config caps its own at 1,000)
MAX_TURNS = 10**6


class TurnBudgetError(ValueError):
    """A turn budget outside 1..MAX_TURNS; the message is one line, fit for a command-line error."""


def turn_budget_message(value: Any) -> str:
    """The refusal every entry point gives for `value`."""
    return f"max_turns must be a whole number of turns from 1 to {MAX_TURNS:,}, got {value!r}"


def check_turn_budget(value: Any) -> int:
    """`value` if it is an int in 1..MAX_TURNS (bools are not turn counts); TurnBudgetError otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TURNS:
        raise TurnBudgetError(turn_budget_message(value))
    return value
