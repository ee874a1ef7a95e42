"""A turn budget (`max_turns`) of 0 or below is refused with the same one-line message at every entry point
that takes one: the env, the vector envs (local and remote), the remote env, the env server's session
options (live, on loopback), the trainer config, the rollout engine, the benchmark runner and both eval
commands. The rollout engine used to accept 0 and play it as 1 turn."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from search_env.evaluation.benchmark import run_benchmark
from search_env.evaluation.scripted import ScriptedPolicy
from search_env.remote_env import RemoteSearchEnv
from search_env.remote_vector_env import RemoteSearchVectorEnv
from search_env.search_qa_env import SearchQAEnv
from search_env.turn_budget import MAX_TURNS, TurnBudgetError, check_turn_budget, turn_budget_message
from search_env.vector_env import SearchQAVectorEnv
from trainer.config import ConfigError, load_config
from trainer.rollout.engine import RolloutEngine

BAD = [0, -1, -(10**9)]
NOWHERE = "http://127.0.0.1:9"  # nothing listens: an entry point that got past the check would fail differently


def test_the_check_itself() -> None:
    assert check_turn_budget(1) == 1 and check_turn_budget(MAX_TURNS) == MAX_TURNS
    for value in [*BAD, MAX_TURNS + 1, True, 2.0, "3", None]:
        with pytest.raises(TurnBudgetError) as err:
            check_turn_budget(value)
        assert str(err.value) == turn_budget_message(value) and "\n" not in str(err.value)


@pytest.mark.parametrize("value", BAD)
def test_python_entry_points_refuse_it_with_one_message(value: int) -> None:
    message = turn_budget_message(value)
    entry_points = {
        "env": lambda: SearchQAEnv("world:small", split="test", retriever_url=NOWHERE, max_turns=value),
        "vector env": lambda: SearchQAVectorEnv(2, data="world:small", retriever_url=NOWHERE, max_turns=value),
        "remote env": lambda: RemoteSearchEnv(NOWHERE, data="world:small", max_turns=value, retries=0),
        "remote vector env": lambda: RemoteSearchVectorEnv(2, server_url=NOWHERE, max_turns=value, retries=0),
        "rollout engine": lambda: RolloutEngine(None, None, group_size=1, max_turns=value),
        "benchmark": lambda: asyncio.run(run_benchmark(ScriptedPolicy("title"), [], max_turns=value)),
    }
    for name, make in entry_points.items():
        with pytest.raises(TurnBudgetError) as err:
            make()
        assert str(err.value) == message, name


def test_the_rollout_engine_still_takes_no_budget_and_a_positive_one() -> None:
    assert RolloutEngine(None, None, group_size=1).max_turns is None
    assert RolloutEngine(None, None, group_size=1, max_turns=1).max_turns == 1


@pytest.mark.parametrize("key", ["env.max_turns", "env.eval_max_turns"])
@pytest.mark.parametrize("value", BAD)
def test_trainer_config_refuses_it(key: str, value: int) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{key}={value}"])
    text = str(err.value)
    assert turn_budget_message(value) in text and "\n" not in text.strip()
    assert load_config(None, [f"{key}=2"]).env.max_turns == (2 if key == "env.max_turns" else 4)


@pytest.mark.parametrize("value", BAD)
def test_env_server_refuses_it(env_server, value: int) -> None:
    body = {"env_id": "searchgym/SearchQA-v0", "options": {"data": "world:small", "split": "test", "max_turns": value}}
    r = httpx.post(env_server.url + "/sessions", json=body)
    assert r.status_code == 422 and turn_budget_message(value) in r.text, r.text
    body["options"]["max_turns"] = 2
    r = httpx.post(env_server.url + "/sessions", json=body)
    assert r.status_code == 201, r.text
    httpx.delete(env_server.url + f"/sessions/{r.json()['session_id']}")


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("command", ["search-env", "search-trainer"])
def test_eval_commands_refuse_it(command: str, value: int, capsys: pytest.CaptureFixture[str]) -> None:
    if command == "search-env":
        from search_env.cli import main

        argv = ["eval", "--policy", "scripted", "--retriever-url", NOWHERE, "--max-turns", str(value)]
    else:
        from trainer.cli import main

        argv = ["eval", "--model", "smollm2", "--max-turns", str(value)]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].endswith(f"argument --max-turns: {turn_budget_message(value)}")
