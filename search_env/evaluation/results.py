"""Per-episode results, their per-data-set aggregates, and the JSONL they are written to."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EpisodeResult:
    """One played question: one JSONL line."""

    data_set: str
    policy: str
    index: int
    question_id: str
    question: str
    golden_answers: list[str]
    answer: str | None
    em: float
    subem: float
    f1: float
    reward: float
    turns: int
    num_searches: int
    invalid_actions: int
    terminated: bool
    truncated: bool
    searches: list[str] = field(default_factory=list)
    hops: int | None = None
    transcript: list[dict[str, str]] = field(default_factory=list)
    failed: bool = False  # the policy or the env raised: scored 0, counted in the table's `failed`
    error: str | None = None

    @classmethod
    def from_env(
        cls,
        *,
        data_set: str,
        policy: str,
        index: int,
        reset_info: dict[str, Any],
        info: dict[str, Any],
        reward: float,
        terminated: bool,
        truncated: bool,
        turns: int,
        transcript: list[dict[str, str]],
    ) -> EpisodeResult:
        """A result from what the env reported: its reset info (question, hops), the last step's info
        (metrics, golds and answer at the end; `turn` when it counts them, else `turns`) and the end.
        Every episode player builds its rows here, so text and token players fill them alike."""
        return cls(
            data_set=data_set,
            policy=policy,
            index=index,
            question_id=str(info.get("question_id", reset_info.get("question_id", index))),
            question=str(reset_info.get("question", "")),
            golden_answers=list(info.get("golden_answers", [])),
            answer=info.get("answer"),
            em=float(info.get("em", 0.0)),
            subem=float(info.get("subem", 0.0)),
            f1=float(info.get("f1", 0.0)),
            reward=float(reward),
            turns=int(info.get("turn", turns)),
            num_searches=int(info.get("num_searches", 0)),
            invalid_actions=int(info.get("invalid_actions", 0)),
            terminated=bool(terminated),
            truncated=bool(truncated),
            searches=list(info.get("searches", [])),
            hops=reset_info.get("hops"),
            transcript=transcript,
        )

    @classmethod
    def failure(
        cls,
        *,
        data_set: str,
        policy: str,
        index: int,
        error: BaseException,
        reset_info: dict[str, Any] | None = None,
        transcript: list[dict[str, str]] | None = None,
        golden_answers: Sequence[str] = (),
    ) -> EpisodeResult:
        """The row of an episode that could not be played to its end: scored 0 and marked failed, with
        the error and whatever was played before it."""
        reset_info = reset_info or {}
        turns = sum(1 for t in transcript or [] if t.get("role") == "policy")
        return cls(
            data_set=data_set,
            policy=policy,
            index=index,
            question_id=str(reset_info.get("question_id", index)),
            question=str(reset_info.get("question", "")),
            golden_answers=list(golden_answers),
            answer=None,
            em=0.0,
            subem=0.0,
            f1=0.0,
            reward=0.0,
            turns=turns,
            num_searches=0,
            invalid_actions=0,
            terminated=False,
            truncated=False,
            hops=reset_info.get("hops"),
            transcript=transcript or [],
            failed=True,
            error=f"{type(error).__name__}: {error}"[:2000],
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


@dataclass(frozen=True)
class SetMetrics:
    """One row of the results table."""

    data_set: str
    policy: str
    n: int
    em: float
    f1: float
    subem: float
    mean_turns: float
    mean_searches: float
    invalid_action_rate: float  # invalid actions / all actions taken
    answered: float  # share of episodes that ended with an answer (not truncated)
    failed: int = 0  # episodes the policy or the env failed (in n, scored 0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def aggregate(episodes: Sequence[EpisodeResult] | Sequence[dict[str, Any]]) -> list[SetMetrics]:
    """Metrics per (data set, policy), in order of first appearance; takes results or JSONL dicts."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for episode in episodes:
        row = asdict(episode) if isinstance(episode, EpisodeResult) else episode
        groups.setdefault((row["data_set"], row["policy"]), []).append(row)
    metrics = []
    for (data_set, policy), rows in groups.items():
        n = len(rows)
        actions = sum(r["turns"] for r in rows)
        metrics.append(
            SetMetrics(
                data_set=data_set,
                policy=policy,
                n=n,
                em=sum(r["em"] for r in rows) / n,
                f1=sum(r["f1"] for r in rows) / n,
                subem=sum(r["subem"] for r in rows) / n,
                mean_turns=actions / n,
                mean_searches=sum(r["num_searches"] for r in rows) / n,
                invalid_action_rate=sum(r["invalid_actions"] for r in rows) / actions if actions else 0.0,
                answered=sum(1 for r in rows if r["terminated"]) / n,
                failed=sum(1 for r in rows if r.get("failed")),
            )
        )
    return metrics


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def summary_path(jsonl_path: str | Path) -> Path:
    """Where the aggregates of an episodes file go: `x.jsonl` -> `x.summary.json`."""
    path = Path(jsonl_path)
    stem = path.name[: -len(".jsonl")] if path.name.endswith(".jsonl") else path.stem
    return path.with_name(stem + ".summary.json")


def write_summary(path: str | Path, metrics: Iterable[SetMetrics], config: dict[str, Any]) -> Path:
    path = Path(path)
    body = {"config": config, "results": [m.to_dict() for m in metrics]}
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path
