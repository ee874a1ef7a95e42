"""Episode rewards from the final answer: exact match (default), sub-string EM or F1, plus an
optional format score for a well-formed but wrong answer (Search-R1's `format_score`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from search_env.answers import em_check, max_f1, subem_check

RewardKind = Literal["em", "subem", "f1"]


class RewardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: RewardKind = "em"
    format_score: float = Field(0.0, ge=0.0, le=1.0, description="reward for an answer given but wrong")


def answer_metrics(answer: str | None, golden_answers: Sequence[str]) -> dict[str, float]:
    """EM, sub-string EM and F1 of an answer (all 0 when no answer was given)."""
    if answer is None:
        return {"em": 0.0, "subem": 0.0, "f1": 0.0}
    return {
        "em": float(em_check(answer, golden_answers)),
        "subem": float(subem_check(answer, golden_answers)),
        "f1": max_f1(answer, golden_answers),
    }


def episode_reward(metrics: dict[str, float], answered: bool, config: RewardConfig) -> float:
    """As Search-R1's compute_score_em: the score if positive, else `format_score` for an answer given."""
    score = metrics[config.kind]
    if score > 0:
        return score
    return config.format_score if answered else 0.0
