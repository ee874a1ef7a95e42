"""Greedy evaluation of the tiny policy on the real env, with the diagnostics its development needs.

The episodes are played by the trainer's evaluation player (trainer.evaluation.EnginePlayer: the
rollout engine at temperature 0), so these numbers are measured on the token stream GRPO trains on;
this module only summarises them (EM by hops, whether the gold was ever read, a few examples).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from search_env.search_qa_env import SearchQAEnv
from trainer.evaluation import EnginePlayer
from trainer.rollout.hf_generator import HFGenerator


def evaluate_greedy(
    model: Any,
    tokenizer: Any,
    env_kwargs: dict[str, Any],
    n: int | None = None,
    *,
    batch_size: int = 50,
    max_new_tokens: int = 48,
    max_total_tokens: int | None = None,
) -> dict[str, Any]:
    """Play the first `n` questions of `SearchQAEnv(**env_kwargs)` greedily, `batch_size` at a time;
    EM overall and by hops. `max_total_tokens` (default: the model's max positions) is the episode's
    token budget, as in training: an episode past it ends with reward 0.

    Also reports how often a gold answer was in the text the policy read (`gold_seen`: low means the
    searches fail, high with low EM means reading fails), three decoded episodes and per-episode rows.
    """
    probe = SearchQAEnv(**env_kwargs)
    total = len(probe.records) if n is None else min(n, len(probe.records))
    envs = [probe] + [SearchQAEnv(**env_kwargs) for _ in range(min(batch_size, total) - 1)]
    player = EnginePlayer(
        HFGenerator(model, tokenizer, batch_size=batch_size),
        tokenizer,
        name="greedy",
        max_new_tokens_per_turn=max_new_tokens,
        max_total_tokens=max_total_tokens or model.config.max_position_embeddings,
    )
    try:
        played = player.play_episodes(envs, range(total))
    finally:
        for env in envs:
            env.close()
    by_hops: dict[int, list[float]] = defaultdict(list)
    episodes: list[dict[str, Any]] = []
    for ep in played:
        hops = int(ep.reset_info.get("hops") or 0)
        golds = list(probe.records[ep.group_id].golden_answers)
        seen = "".join(ep.observations)  # to tell reading failures from search failures
        by_hops[hops].append(ep.reward)
        episodes.append(
            {
                "index": ep.group_id,
                "hops": hops,
                "reward": ep.reward,
                "answer": ep.info.get("answer"),
                "golden_answers": golds,
                "turns": ep.turns,
                "gold_seen": any(g in seen for g in golds),
            }
        )
    scores = [e["reward"] for e in episodes]
    return {
        "n": len(scores),
        "em": sum(scores) / max(1, len(scores)),
        "em_by_hops": {h: sum(rs) / len(rs) for h, rs in sorted(by_hops.items())},
        "n_by_hops": {h: len(rs) for h, rs in sorted(by_hops.items())},
        "answered": sum(ep.terminated for ep in played) / max(1, len(scores)),
        "mean_turns": sum(ep.turns for ep in played) / max(1, len(played)),
        "gold_seen": sum(e["gold_seen"] for e in episodes) / max(1, len(episodes)),
        "examples": [tokenizer.decode(ep.transcript.input_ids) for ep in played[:3]],
        "episodes": episodes,
    }
