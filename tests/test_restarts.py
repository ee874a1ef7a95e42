"""Restarts ridden out, live on loopback: an episode waits for a restarting retriever (logged, bounded),
and a RemoteSearchEnv rebuilds its session by replay after the env server restarts on the same port."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import pytest

from search_env.remote_env import EnvServerUnavailable, EpisodeReplayMismatch, RemoteSearchEnv
from search_env.search_qa_env import SearchQAEnv
from search_env.server_process import ServerProcess, free_port

DATA = {"data": "world:small", "split": "test"}
RETRIEVER = ["retriever", "--backend", "bm25", "--world", "small"]


class _Seen(logging.Handler):
    """Sets `event` when a record with `text` is logged (from any thread); keeps every message."""

    def __init__(self, text: str):
        super().__init__(logging.WARNING)
        self.text = text
        self.event = threading.Event()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        if self.text in self.messages[-1]:
            self.event.set()


@pytest.fixture
def seen():
    handlers: list[tuple[logging.Logger, _Seen]] = []

    def watch(logger: str, text: str) -> _Seen:
        handler = _Seen(text)
        log = logging.getLogger(logger)
        log.addHandler(handler)
        log.setLevel(logging.WARNING)
        handlers.append((log, handler))
        return handler

    yield watch
    for log, handler in handlers:
        log.removeHandler(handler)


def test_an_episode_waits_out_a_retriever_restart(bm25_server, tmp_path: Path, seen):
    # bm25_server built the index: these retrievers only load it.
    port = free_port()
    first = ServerProcess(RETRIEVER, tmp_path / "first.log", port=port).start().wait_ready(timeout=300)
    env = SearchQAEnv(DATA["data"], split="test", retriever_url=first.url, retriever_retries=0, retriever_wait_s=300)
    second = ServerProcess(RETRIEVER, tmp_path / "second.log", port=port)
    try:
        env.reset(options={"index": 0})
        action = f"<search> {env.question.question} </search>"
        before = env.step(action)
        first.stop()
        waits = seen("search_env.http", "waiting up to")
        results: list[tuple] = []
        stepping = threading.Thread(target=lambda: results.append(env.step(action)))
        stepping.start()
        assert waits.event.wait(timeout=120), "the step never logged a wait"
        second.start()  # only now: the step is known to be waiting
        stepping.join(timeout=300)
        assert not stepping.is_alive() and results, "the step did not come back"
        obs, reward, terminated, truncated, info = results[0]
        assert obs == before[0] and obs.startswith("\n\n<information>Doc 1(Title:")
        assert not info.get("search_error") and info["turn"] == 2 and not (terminated or truncated)
        assert any("answers again after" in m for m in waits.messages)
    finally:
        env.close()
        second.stop()
        first.stop()


def test_the_wait_is_bounded_when_the_retriever_never_comes_back(small_world, seen):
    waits = seen("search_env.http", "waiting up to")
    env = SearchQAEnv(
        DATA["data"],
        split="test",
        retriever_url=f"http://127.0.0.1:{free_port()}",
        retriever_retries=0,
        retriever_wait_s=1.0,
    )
    env.retriever.http.backoff = 0.05
    env.reset(options={"index": 0})
    obs, reward, terminated, truncated, info = env.step("<search> anything </search>")
    assert obs.startswith("\n\n<information>Search failed: retrieval server at") and "attempts over" in obs
    assert info["search_error"] and (reward, terminated, truncated) == (0.0, False, False)
    assert waits.event.is_set()
    env.close()


def test_a_remote_env_gives_up_after_its_outage_wait(small_world):
    with pytest.raises(EnvServerUnavailable, match="attempts over"):
        RemoteSearchEnv(f"http://127.0.0.1:{free_port()}", retries=0, backoff=0.05, outage_wait_s=1.0, **DATA)


def _play(env: RemoteSearchEnv, actions: list[str]) -> list[tuple]:
    return [env.step(a)[:4] for a in actions]


def _actions(env: RemoteSearchEnv) -> list[str]:
    _, info = env.reset(options={"index": 0})
    return [
        f"<search> {info['question']} </search>",
        "no tags at all",
        "<search> river city </search>",
        "<answer>some answer</answer>",
    ]


def test_a_remote_episode_is_rebuilt_by_replay_after_an_env_server_restart(bm25_server, tmp_path: Path, seen):
    port = free_port()
    args = ["env", "--retriever-url", bm25_server.url]
    server = ServerProcess(args, tmp_path / "env1.log", port=port).start().wait_ready(timeout=120)
    again = ServerProcess(args, tmp_path / "env2.log", port=port)
    try:
        plain = RemoteSearchEnv(server.url, **DATA)
        actions = _actions(plain)
        expected = _play(plain, actions)
        plain.close()
        assert expected[-1][2] and not any(step[2] for step in expected[:-1])  # ends at the answer

        env = RemoteSearchEnv(server.url, outage_wait_s=120, **DATA)
        env.reset(options={"index": 0})
        lost = env.session_id
        got = _play(env, actions[:2])
        server.stop(signal.SIGKILL)
        again.start()  # comes back on the same port, with no sessions
        rebuilt = seen("search_env.remote_env", "replayed the reset and 2 steps")
        got += _play(env, actions[2:])
        assert got == expected
        assert env.rebuilds == 1 and env.session_id != lost and rebuilt.event.is_set()
        env.close()
    finally:
        again.stop()
        server.stop()


def test_a_replay_that_answers_differently_is_a_clear_error(bm25_server, strict_server, tmp_path: Path):
    # The restarted server searches a strict retriever: the long query it once cut is now refused.
    port = free_port()
    server = ServerProcess(["env", "--retriever-url", bm25_server.url], tmp_path / "env1.log", port=port)
    strict = ServerProcess(["env", "--retriever-url", strict_server.url], tmp_path / "env2.log", port=port)
    try:
        server.start().wait_ready(timeout=120)
        env = RemoteSearchEnv(server.url, outage_wait_s=120, **DATA)
        env.reset(options={"index": 0})
        env.step("<search> " + "river city " * 600 + "</search>")
        server.stop(signal.SIGKILL)
        strict.start().wait_ready(timeout=120)
        with pytest.raises(EpisodeReplayMismatch, match="question .* turn 1"):
            env.step("<answer>x</answer>")
        env.close()
    finally:
        strict.stop()
        server.stop()


def test_the_trainers_envs_wait_for_the_configured_time(small_world):
    from trainer.config import TrainConfig
    from trainer.grpo_trainer import GRPOTrainer

    config = TrainConfig.model_validate({"env": {"data": "world:small", "outage_wait_s": 7.5}})
    assert TrainConfig().env.outage_wait_s == 120.0  # long enough for a BM25 restart (~10 s)
    trainer = GRPOTrainer.__new__(GRPOTrainer)  # make_env needs only the config, records, options, client
    trainer.config, trainer.env_options, trainer.retriever = config, {"topk": 3}, None
    trainer.records = SearchQAEnv("world:small", split="train", retriever_url="http://127.0.0.1:9").records
    env = trainer.make_env()
    assert env.retriever.http.outage_wait_s == 7.5
    assert trainer.make_env().retriever is env.retriever  # the trainer's envs share one client
    env.close()
    trainer.retriever.close()
