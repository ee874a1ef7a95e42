"""Per-collection rollout statistics: throughput and the agent's behaviour, for the training log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol


class _Transcript(Protocol):
    response_ids: Sequence[int]

    @property
    def num_generated(self) -> int: ...


class EpisodeLike(Protocol):
    """What the statistics read of `trainer.rollout.engine.Episode` (a Protocol, so this module does not
    import the engine that imports it)."""

    transcript: _Transcript
    steps: int
    searches: int
    valid_actions: int
    reward: float
    terminated: bool
    truncated_by: str | None
    observations_cut: int

    @property
    def turns(self) -> int: ...


@dataclass(frozen=True)
class RolloutStats:
    episodes: int
    generated_tokens: int
    observation_tokens: int
    wall_time_s: float
    generation_time_s: float
    #: env steps and resets (with overlap_env, partly on a worker thread, hidden behind generation)
    env_time_s: float
    #: the part of env_time_s spent in /retrieve requests (in-process envs; an env server's is env time)
    retrieval_time_s: float
    #: decoding actions, encoding prompts and observations, and the bookkeeping of each turn
    tokenize_time_s: float
    #: what of the wall time the calling thread spent in env work or waiting for it (env_time_s when
    #: nothing overlaps)
    env_wait_time_s: float
    #: generated tokens per second of the whole collection (generation, env steps, tokenising)
    tokens_per_s: float
    generate_calls: int
    mean_turns: float
    mean_searches: float
    #: share of env steps whose action held a complete <search> or <answer> block
    valid_action_rate: float
    mean_reward: float
    terminated_share: float
    #: share of episodes cut by the engine's token budget (reward 0), and by the env (max turns)
    truncated_by_budget_share: float
    truncated_by_env_share: float
    observations_cut: int

    @classmethod
    def from_episodes(
        cls,
        episodes: Sequence[EpisodeLike],
        *,
        wall_time_s: float,
        generation_time_s: float,
        env_time_s: float,
        generate_calls: int,
        retrieval_time_s: float = 0.0,
        tokenize_time_s: float = 0.0,
        env_wait_time_s: float | None = None,
    ) -> RolloutStats:
        n = max(len(episodes), 1)
        generated = sum(e.transcript.num_generated for e in episodes)
        steps = sum(e.steps for e in episodes)
        return cls(
            episodes=len(episodes),
            generated_tokens=generated,
            observation_tokens=sum(len(e.transcript.response_ids) for e in episodes) - generated,
            wall_time_s=wall_time_s,
            generation_time_s=generation_time_s,
            env_time_s=env_time_s,
            retrieval_time_s=retrieval_time_s,
            tokenize_time_s=tokenize_time_s,
            env_wait_time_s=env_time_s if env_wait_time_s is None else env_wait_time_s,
            tokens_per_s=generated / wall_time_s if wall_time_s > 0 else 0.0,
            generate_calls=generate_calls,
            mean_turns=sum(e.turns for e in episodes) / n,
            mean_searches=sum(e.searches for e in episodes) / n,
            valid_action_rate=sum(e.valid_actions for e in episodes) / steps if steps else 0.0,
            mean_reward=sum(e.reward for e in episodes) / n,
            terminated_share=sum(e.terminated for e in episodes) / n,
            truncated_by_budget_share=sum(e.truncated_by in ("budget", "prompt_too_long") for e in episodes) / n,
            truncated_by_env_share=sum(e.truncated_by == "env" for e in episodes) / n,
            observations_cut=sum(e.observations_cut for e in episodes),
        )

    def as_dict(self, prefix: str = "rollout/") -> dict[str, Any]:
        return {prefix + k: v for k, v in asdict(self).items()}
