"""Pipelined rollouts: one part's searches on a thread while another part generates, same episodes.

The policy is the embedded tiny policy (a short warm start, the same as tests/test_trainer.py's, so
the built policy is shared), which searches; the envs are the trainer's own: in-process SearchQAEnvs
against the live BM25 server, or sessions of the live env server.
"""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest
import torch

from tests.test_trainer import QUICK_POLICY
from trainer.config import ConfigError, load_config
from trainer.grpo_trainer import GRPOTrainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SMALL = [
    *QUICK_POLICY,
    "rollout.group_size=4",
    "rollout.questions_per_step=4",
    "rollout.max_new_tokens=32",
    "rollout.max_total_tokens=768",
    "rollout.pipeline_splits=2",
]


class ThreadWatcher:
    """Delegates to the engine's real generator; notes which threads are alive during each call."""

    def __init__(self, generator: Any):
        self.generator = generator
        self.env_thread_alive: list[bool] = []

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        self.env_thread_alive.append(any(t.name.startswith("rollout-env") for t in threading.enumerate()))
        return self.generator.generate(*args, **kwargs)


def _requests(url: str) -> int:
    return httpx.get(url + "/info").json()["traffic"]["requests"]


def _played(episodes: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            e.transcript.input_ids,
            e.transcript.gen_mask,
            e.transcript.sampler_logprobs,
            e.actions,
            e.observations,
            e.reward,
            e.truncated_by,
            e.searches,
        )
        for e in episodes
    ]


@pytest.mark.parametrize("where", ["in-process envs", "env server"])
def test_overlap_plays_the_same_episodes_with_the_searches_on_a_thread(where, request, bm25_server, tmp_path):
    remote = where == "env server"
    extra = [f"env.env_url={request.getfixturevalue('env_server').url}"] if remote else []
    config = load_config(None, [*SMALL, f"env.retriever_url={bm25_server.url}", f"run.out_dir={tmp_path}", *extra])
    trainer = GRPOTrainer(config)
    trainer.setup()
    engine = trainer.engine
    watcher = ThreadWatcher(engine.generator)
    engine.generator = watcher
    questions = list(range(4))
    envs = trainer.rollout_envs(len(questions) * engine.group_size)
    played, stats = {}, {}
    for overlap in (False, True):
        engine.overlap_env = overlap
        watcher.env_thread_alive.clear()
        before = _requests(bm25_server.url)
        torch.manual_seed(7)
        episodes = engine.collect(envs, questions)
        requests = _requests(bm25_server.url) - before
        played[overlap] = _played(episodes)
        stats[overlap] = engine.last_stats
        assert stats[overlap] is not None
        # One retriever client for all in-process envs (one env-server request per step for remote
        # ones): at most one /retrieve per part per round, not one per search.
        assert requests <= stats[overlap].generate_calls < sum(e.searches for e in episodes)
        assert any(watcher.env_thread_alive) == overlap
    assert played[True] == played[False]
    for s in stats.values():
        # an env server's searches are its own env time; in-process ones are timed by the client
        assert (s.retrieval_time_s == 0) if remote else (0 < s.retrieval_time_s <= s.env_time_s)
        assert s.generation_time_s + s.tokenize_time_s + s.env_wait_time_s <= s.wall_time_s
    # Sequential: the calling thread does all env work itself. Overlapped: the worker steps the envs.
    assert stats[False].env_wait_time_s >= stats[False].env_time_s
    trainer.engine.close()
    if trainer.retriever is not None:
        trainer.retriever.close()
    if trainer.remote_envs is not None:
        trainer.remote_envs.close()


def test_overlap_needs_two_parts():
    with pytest.raises(ConfigError, match="overlap_env needs pipeline_splits >= 2"):
        load_config(None, ["rollout.overlap_env=true"])
    with pytest.raises(ConfigError, match="pipeline_splits"):
        load_config(None, ["rollout.pipeline_splits=0"])
