"""Several replicas behind every client, live on loopback (issue 22 item 2).

Three retrieval replicas under a steady load from a thread, one SIGKILLed mid-load: no request fails
and every answer is a single server's; the killed one, restarted on its port, is probed back in and
gets traffic again. Two env servers with sessions mid-episode, one SIGKILLed: every episode ends on the
other with the observations and rewards of an undisturbed run. URL lists in flags and config; the
replica id in /info and in every answer's X-Replica-Id header.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from search_env.http_client import JsonHttpClient, parse_urls
from search_env.qa_data import load_qa
from search_env.remote_env import RemoteSearchEnv, batched_remote_step, env_server_client
from search_env.retriever_client import RetrieverClient, RetrieverUnavailable
from search_env.server_process import ServerProcess, free_port

RETRIEVER = ["retriever", "--backend", "bm25s", "--world", "small"]
DATA = {"data": "world:small", "split": "test"}
# Generous: a replica restarted under a loaded single core takes its seconds to load the index.
DEADLINE_S = 180.0


def _until(condition, what: str, deadline_s: float = DEADLINE_S) -> None:
    """Poll `condition` until it holds; fail naming `what` past the deadline (an outcome, not a timing)."""
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not seen within {deadline_s:.0f}s")
        time.sleep(0.2)


def _answers(client: RetrieverClient, queries: list[str]) -> list[list[tuple[str, str, float]]]:
    return [[(d.document.id, d.document.contents, d.score) for d in docs] for docs in client.retrieve(queries, topk=3)]


@pytest.fixture(scope="module")
def queries(small_world) -> list[str]:
    return [r.question for r in load_qa(small_world.qa["test"])[:24]] + ["river city", "zzz nothing matches"]


@pytest.fixture(scope="module")
def replicas(small_world, tmp_path_factory) -> list[ServerProcess]:
    logs = tmp_path_factory.mktemp("replicas")
    first = ServerProcess(RETRIEVER, logs / "r0.log").start().wait_ready()  # builds the index the others load
    rest = [ServerProcess([*RETRIEVER, "--replica-id", f"replica-{i}"], logs / f"r{i}.log").start() for i in (1, 2)]
    servers = [first, *rest]
    try:
        for server in rest:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_each_answer_names_its_replica(replicas: list[ServerProcess]) -> None:
    for server, expected in zip(replicas, [f"127.0.0.1:{replicas[0].port}", "replica-1", "replica-2"], strict=True):
        info = httpx.get(server.url + "/info")
        assert info.json()["replica_id"] == expected == info.headers["x-replica-id"]
        missing = httpx.get(server.url + "/no-such-path")  # a refusal names it too
        assert missing.status_code == 404 and missing.headers["x-replica-id"] == expected


def test_a_replica_killed_mid_load_fails_no_request_and_is_probed_back_in(
    replicas: list[ServerProcess], queries: list[str], tmp_path: Path
) -> None:
    with RetrieverClient(replicas[0].url) as single:
        expected = [_answers(single, [q]) for q in queries]
    client = RetrieverClient([s.url for s in replicas], timeout=30)
    client.http.probe_interval_s, client.http.max_probe_interval_s = 0.5, 2.0
    answered: list[tuple[int, list]] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            try:
                answered.append((i % len(queries), _answers(client, [queries[i % len(queries)]])))
            except BaseException as err:  # every failure is the test's outcome, not the thread's end
                failures.append(err)
            i += 1

    victim = replicas[1]
    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    try:
        _until(lambda: len(answered) >= 60, "60 answers before the kill")
        victim.stop(signal.SIGKILL)
        at_kill = len(answered)
        _until(lambda: len(answered) >= at_kill + 120, "120 answers after the kill")
        stats = {s["url"]: s for s in client.http.replica_stats()}
        assert stats[victim.url]["down"] and not stats[replicas[0].url]["down"]

        back = ServerProcess(victim.cmd[3:-2], tmp_path / "r1-again.log", port=victim.port)
        replicas[1] = back  # the fixture stops it
        back.start().wait_ready()
        served_before = stats[victim.url]["answered"]
        _until(
            lambda: {s["url"]: s for s in client.http.replica_stats()}[victim.url]["answered"] > served_before,
            "the restarted replica answering the client",
        )
        _until(
            lambda: httpx.get(back.url + "/info").json()["traffic"]["requests"] > 0,
            "requests counted by the restarted replica",
        )
    finally:
        stop.set()
        thread.join(timeout=60)
        client.close()
    assert failures == []
    assert all(got == expected[i] for i, got in answered)


def test_a_dead_replica_costs_no_retry_and_a_dead_fleet_gets_the_outage_wait(replicas: list[ServerProcess]) -> None:
    dead = [f"http://127.0.0.1:{free_port()}" for _ in range(2)]
    with RetrieverClient(replicas[0].url) as single:
        expected = _answers(single, ["river city"])
    with RetrieverClient([*dead, replicas[0].url], retries=0) as client:
        # retries=0: each answer came through failovers alone; in turn, every replica was tried.
        assert [_answers(client, ["river city"]) for _ in range(6)] == [expected] * 6
        got = asyncio.run(client.aretrieve(["river city"], topk=3))
        assert [[(d.document.id, d.document.contents, d.score) for d in docs] for docs in got] == expected
        assert [s["down"] for s in client.http.replica_stats()] == [True, True, False]
    with (
        RetrieverClient(dead, retries=1, backoff=0.01, outage_wait_s=0.5) as client,
        pytest.raises(RetrieverUnavailable, match="unavailable after"),
    ):
        client.retrieve(["river city"])


def test_url_lists_parse_wherever_one_url_is_taken() -> None:
    assert parse_urls("http://a:1/") == ["http://a:1/".rstrip("/")]
    assert parse_urls("http://a:1/, http://b:2") == ["http://a:1", "http://b:2"]
    assert parse_urls(["http://a:1", "http://b:2,http://c:3"]) == ["http://a:1", "http://b:2", "http://c:3"]
    for empty in (",", [], " , "):
        with pytest.raises(ValueError):
            parse_urls(empty)
    one = JsonHttpClient("http://a:1/", what="x")
    assert one.base_url == "http://a:1" and one.base_urls == ["http://a:1"]
    several = RetrieverClient(["http://a:1/retrieve", "http://b:2"])
    assert (
        several.base_urls == ["http://a:1", "http://b:2"] and several.url == "http://a:1/retrieve,http://b:2/retrieve"
    )

    from agent_server.cli import build_parser
    from agent_server.env.app import create_env_app

    args = build_parser().parse_args(["env", "--retriever-url", "http://a:1,http://b:2", "--worlds", ""])
    app = create_env_app(args.retriever_url, worlds=[])
    assert app.state.server.retriever.base_urls == ["http://a:1", "http://b:2"]

    from trainer.cli import build_parser as trainer_parser
    from trainer.cli import overrides_from_args
    from trainer.config import EnvSection, load_config

    assert EnvSection(retriever_url=["http://a:1", "http://b:2/"]).retriever_url == "http://a:1,http://b:2"
    assert EnvSection(env_url="http://a:1 , http://b:2").env_url == "http://a:1,http://b:2"
    assert EnvSection(retriever_url="http://a:1").retriever_url == "http://a:1"
    flags = trainer_parser().parse_args(
        ["train", "--retriever-url", "http://a:1,http://b:2", "--env-url", "http://c:3,http://d:4"]
    )
    config = load_config(None, overrides_from_args(flags), environ={})
    assert (config.env.retriever_url, config.env.env_url) == ("http://a:1,http://b:2", "http://c:3,http://d:4")
    with pytest.raises(ValueError):
        EnvSection(retriever_url=[])


def test_the_trainers_preflight_checks_each_replica(replicas: list[ServerProcess]) -> None:
    from trainer.config import EnvSection
    from trainer.preflight import EnvUnreachable, check_env_reachable

    dead = f"http://127.0.0.1:{free_port()}"
    check_env_reachable(EnvSection(retriever_url=[replicas[0].url, replicas[2].url], data="world:small"))
    with pytest.raises(EnvUnreachable, match=dead):
        check_env_reachable(EnvSection(retriever_url=[replicas[0].url, dead], data="world:small"))


def _actions(question: str) -> list[str]:
    return [f"<search> {question} </search>", "no tags at all", "<search> river city </search>", "<answer>x</answer>"]


def test_env_sessions_of_a_killed_env_server_finish_on_the_other(bm25s_server, tmp_path: Path) -> None:
    args = ["env", "--retriever-url", bm25s_server.url, "--max-sessions", "64"]
    first = ServerProcess(args, tmp_path / "env-a.log").start()
    second = ServerProcess(args, tmp_path / "env-b.log").start()
    sessions = 16
    try:
        first.wait_ready(timeout=120)
        second.wait_ready(timeout=120)
        undisturbed, plans = [], []
        for i in range(sessions):
            env = RemoteSearchEnv(second.url, **DATA)
            _, info = env.reset(options={"index": i})
            plans.append(_actions(info["question"]))
            undisturbed.append([env.step(a)[:4] for a in plans[-1]])
            env.close()

        http = env_server_client([first.url, second.url])
        envs = [RemoteSearchEnv(http=http, **DATA) for _ in range(sessions)]
        for i, env in enumerate(envs):
            env.reset(options={"index": i})
        on_first = [env for env in envs if env.server_url == first.url]
        assert 0 < len(on_first) < sessions  # the sessions are spread over both servers
        played = [[step[:4]] for step in batched_remote_step(envs, [p[0] for p in plans])]
        for got, step in zip(played, batched_remote_step(envs, [p[1] for p in plans]), strict=True):
            got.append(step[:4])
        first.stop(signal.SIGKILL)
        for got, step in zip(played, batched_remote_step(envs, [p[2] for p in plans]), strict=True):
            got.append(step[:4])
        for got, env, plan in zip(played, envs, plans, strict=True):
            got.append(env.step(plan[3])[:4])
        assert played == undisturbed
        assert all(env.server_url == second.url for env in envs)
        assert [env.rebuilds for env in envs] == [1 if env in on_first else 0 for env in envs]
        for env in envs:
            env.close()
        http.close()
    finally:
        first.stop()
        second.stop()


def _eval(where: list[str], out: Path) -> list[list]:
    """`search-env eval` of the scripted policy on 8 questions, `where` naming the servers: each
    episode's question, answer, EM, turns and transcript, in question order."""
    from search_env.cli import main
    from search_env.evaluation import read_jsonl

    args = ["eval", "--policy", "scripted-entity", "--data", "world:small:single", "--limit", "8"]
    assert main([*args, *where, "--concurrency", "4", "--out", str(out), "--no-progress"]) == 0
    key = ("question_id", "answer", "em", "turns", "transcript")
    return [[r[k] for k in key] for r in sorted(read_jsonl(out), key=lambda r: r["index"])]


def test_search_env_eval_takes_url_lists_and_routes_around_a_dead_server(bm25s_server, tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    env = ServerProcess(["env", "--retriever-url", f"{dead},{bm25s_server.url}"], tmp_path / "env.log").start()
    try:
        env.wait_ready(timeout=120)
        expected = _eval(["--retriever-url", bm25s_server.url], tmp_path / "single.jsonl")
        assert _eval(["--retriever-url", f"{dead},{bm25s_server.url}"], tmp_path / "local.jsonl") == expected
        # The env server's own retriever list has the dead one too.
        assert _eval(["--env-url", f"{dead},{env.url}"], tmp_path / "remote.jsonl") == expected
    finally:
        env.stop()


@pytest.mark.usefixtures("one_torch_thread")
def test_a_training_run_loses_a_retriever_replica_and_no_rollout(
    replicas: list[ServerProcess], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.test_trainer import SMALL
    from trainer.config import load_config
    from trainer.diagnostics import read_metrics
    from trainer.grpo_trainer import GRPOTrainer

    def config(out: Path, urls: str):
        return load_config(None, [*SMALL, f"env.retriever_url={urls}", f"run.out_dir={out}", "run.steps=3"])

    undisturbed = GRPOTrainer(config(tmp_path / "one", replicas[0].url)).train()
    victim = replicas[2]
    trainer = GRPOTrainer(config(tmp_path / "two", f"{replicas[0].url},{victim.url}"))
    finished, killed_mid_run = threading.Event(), threading.Event()
    served: list[int] = []

    def kill_after_the_first_step() -> None:
        metrics = tmp_path / "two" / "metrics.jsonl"
        while not finished.is_set():
            if metrics.is_file() and metrics.read_text().strip():
                served.append(httpx.get(victim.url + "/info").json()["traffic"]["requests"])
                victim.stop(signal.SIGKILL)
                killed_mid_run.set()  # before the run finished: it had steps and its evaluation to go
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_after_the_first_step, daemon=True)
    killer.start()
    try:
        result = trainer.train()
    finally:
        finished.set()
        killer.join(timeout=60)
    assert killed_mid_run.is_set() and served[0] > 0  # it served the run's first step, then died
    assert f"replica {victim.url} is down" in caplog.text  # and the run routed around it
    clocks = ("time/", "wall_time", "perf/")
    for a, b in zip(read_metrics(undisturbed.run_dir), read_metrics(result.run_dir), strict=True):
        assert a.get("env/failed_searches", 0) == b.get("env/failed_searches", 0) == 0
        differ = {k: (a[k], b.get(k)) for k in a if not k.startswith(clocks) and a[k] != b.get(k)}
        assert not differ, f"step {a['step']}: {differ}"
