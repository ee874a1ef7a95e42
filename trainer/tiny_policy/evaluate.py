"""Greedy evaluation of a policy on the real env: a minimal, self-contained batched episode player.

Each turn, every unfinished episode's tokens (prompt, its own sampled ids, the env's observations)
are left-padded into one batch and decoded greedily until `</search>`, `</answer>` or EOS; the text
goes to the env, and the observation is tokenised and appended, as the RL rollouts do.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch

from search_env.search_qa_env import SearchQAEnv, batched_step
from trainer.transcript import Transcript, encode_prompt, encode_text


def stop_token_ids(tokenizer: Any) -> list[int]:
    """EOS and the closing action tags (single tokens in the tiny tokenizer; skipped if not)."""
    ids = [tokenizer.eos_token_id]
    for tag in ("</search>", "</answer>"):
        tag_ids = tokenizer.convert_tokens_to_ids(tag)
        if isinstance(tag_ids, int) and tag_ids != tokenizer.unk_token_id:
            ids.append(tag_ids)
    return ids


@torch.no_grad()
def _generate(model: Any, tokenizer: Any, rows: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Greedy continuations of `rows`, each cut after its first stop token."""
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    stops = stop_token_ids(tokenizer)
    out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=stops, pad_token_id=pad)
    results = []
    for row in out[:, width:].tolist():
        cut = next((i + 1 for i, t in enumerate(row) if t in stops), len(row))
        results.append(row[:cut])
    return results


def evaluate_greedy(
    model: Any,
    tokenizer: Any,
    env_kwargs: dict[str, Any],
    n: int | None = None,
    *,
    batch_size: int = 50,
    max_new_tokens: int = 48,
) -> dict[str, Any]:
    """Play the first `n` questions of `SearchQAEnv(**env_kwargs)` greedily; EM overall and by hops.

    Also reports how often a gold answer was in the retrieved text (`gold_seen`: low means the
    searches fail, high with low EM means reading fails), three decoded episodes and per-episode rows.
    """
    was_training = model.training
    model.eval()
    probe = SearchQAEnv(**env_kwargs)
    total = len(probe.records) if n is None else min(n, len(probe.records))
    envs = [probe] + [SearchQAEnv(**env_kwargs) for _ in range(min(batch_size, total) - 1)]
    by_hops: dict[int, list[float]] = defaultdict(list)
    turns: list[int] = []
    answered = 0
    examples: list[str] = []
    episodes: list[dict[str, Any]] = []
    try:
        for start in range(0, total, batch_size):
            chunk = list(range(start, min(start + batch_size, total)))
            transcripts, hops = [], []
            for env, i in zip(envs, chunk, strict=False):
                prompt, info = env.reset(options={"index": i})
                transcripts.append(Transcript(prompt_ids=encode_prompt(tokenizer, prompt)))
                hops.append(int(info.get("hops") or 0))
            rewards = [0.0] * len(chunk)
            answers: list[str | None] = [None] * len(chunk)
            seen = [""] * len(chunk)  # the observations' text, to tell reading failures from search failures
            active = list(range(len(chunk)))
            while active:
                actions = _generate(model, tokenizer, [transcripts[k].input_ids for k in active], max_new_tokens)
                texts = [tokenizer.decode(a, skip_special_tokens=True) for a in actions]
                results = batched_step([envs[k] for k in active], texts)
                for k, ids, (obs, reward, terminated, truncated, info) in zip(active, actions, results, strict=True):
                    transcripts[k].add_action(ids)
                    seen[k] += obs
                    if obs:
                        transcripts[k].add_observation(encode_text(tokenizer, obs))
                    if terminated or truncated:
                        rewards[k] = float(reward)
                        answered += int(terminated)
                        answers[k] = info.get("answer")
                active = [k for k in active if not envs[k].done]
            for k, i in enumerate(chunk):
                by_hops[hops[k]].append(rewards[k])
                turns.append(transcripts[k].turns)
                golds = envs[k].question.golden_answers if envs[k].question else []
                episodes.append({"index": i, "hops": hops[k], "reward": rewards[k], "answer": answers[k],
                                 "golden_answers": list(golds), "turns": transcripts[k].turns,
                                 "gold_seen": any(g in seen[k] for g in golds)})
            if not examples:
                examples = [tokenizer.decode(t.input_ids) for t in transcripts[:3]]
    finally:
        for env in envs:
            env.close()
        model.train(was_training)
    scores = [r for rs in by_hops.values() for r in rs]
    return {
        "n": len(scores),
        "em": sum(scores) / max(1, len(scores)),
        "em_by_hops": {h: sum(rs) / len(rs) for h, rs in sorted(by_hops.items())},
        "n_by_hops": {h: len(rs) for h, rs in sorted(by_hops.items())},
        "answered": answered / max(1, len(scores)),
        "mean_turns": sum(turns) / max(1, len(turns)),
        "gold_seen": sum(e["gold_seen"] for e in episodes) / max(1, len(episodes)),
        "examples": examples,
        "episodes": episodes,
    }
