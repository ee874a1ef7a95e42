"""RemoteSearchVectorEnv against the live env server on loopback: what `gymnasium.make_vec` returns for
the remote id, one HTTP request per step for all its sessions (counted with httpx event hooks on its
client), the same episodes as single RemoteSearchEnvs on the same seeds, next-step autoreset, and a
session that fails or is lost without taking the others down."""

from __future__ import annotations

from collections import Counter

import gymnasium
import httpx
import numpy as np
import pytest

import search_env  # noqa: F401 - registers the ids
from search_env.qa_data import load_qa
from search_env.remote_env import RemoteSearchEnv, batched_remote_step
from search_env.remote_vector_env import RemoteSearchVectorEnv

DATA = {"data": "world:small", "split": "test", "max_turns": 3}
REMOTE = "searchgym/RemoteSearchQA-v0"


def count_requests(envs: RemoteSearchVectorEnv) -> Counter[str]:
    """Every request the vector env's client sends from now on, as 'METHOD /path' (session ids cut)."""
    seen: Counter[str] = Counter()

    def hook(request: httpx.Request) -> None:
        parts = request.url.path.split("/")
        if len(parts) > 3 and parts[1] == "sessions" and parts[2] != "step":
            parts[2] = "{id}"
        seen[f"{request.method} {'/'.join(parts)}"] += 1

    envs.http._sync().event_hooks["request"].append(hook)
    return seen


@pytest.fixture(scope="module")
def answers(small_world) -> dict[str, list[str]]:
    return {r.id: r.golden_answers for r in load_qa(small_world.qa["test"])}


def _actions(turn: int, infos: list[dict], answers: dict[str, list[str]]) -> list[str]:
    """Turn 0: env i searches its question; turn 1: even envs answer right, odd ones wrong; turn 2+: search."""
    out = []
    for i, info in enumerate(infos):
        if turn == 1:
            out.append(f"<answer>{answers[info['question_id']][0] if i % 2 == 0 else 'no such answer'}</answer>")
        else:
            out.append(f"<search> {info['question']} </search>")
    return out


def test_make_vec_steps_all_sessions_in_one_request_like_single_envs(env_server, answers):
    n, seed = 4, 11
    envs = gymnasium.make_vec(REMOTE, num_envs=n, server_url=env_server.url, **DATA)
    assert isinstance(envs, RemoteSearchVectorEnv) and envs.num_envs == n
    singles = [RemoteSearchEnv(env_server.url, **DATA) for _ in range(n)]
    try:
        seen = count_requests(envs)
        obs, infos = envs.reset(seed=seed)
        assert seen == Counter({"POST /sessions/{id}/reset": n})  # the server has no batched reset
        alone = [env.reset(seed=seed + i) for i, env in enumerate(singles)]
        assert list(obs) == [o for o, _ in alone]
        current = [info for _, info in alone]
        assert [infos["question_id"][i] for i in range(n)] == [info["question_id"] for info in current]

        for turn in range(3):
            seen.clear()
            actions = _actions(turn, current, answers)
            obs, rewards, terminated, truncated, infos = envs.step(tuple(actions))
            if turn < 2:
                assert seen == Counter({"POST /sessions/step": 1}), seen  # one request for all n sessions
            else:  # every episode ended at turn 1: the next step resets each, and steps none
                assert seen == Counter({"POST /sessions/{id}/reset": n}), seen
            expected = []
            for i, env in enumerate(singles):
                if turn < 2:
                    expected.append(env.step(actions[i]))
                else:
                    o, info = env.reset()
                    expected.append((o, 0.0, False, False, info))
                    current[i] = info
            assert list(obs) == [e[0] for e in expected]
            assert rewards.tolist() == [float(e[1]) for e in expected]
            assert terminated.tolist() == [e[2] for e in expected] and truncated.tolist() == [e[3] for e in expected]
            if turn == 0:
                assert all(o.startswith("\n\n<information>Doc 1(Title:") for o in obs)
            if turn == 1:
                assert rewards.tolist() == [1.0, 0.0, 1.0, 0.0] and terminated.all()
    finally:
        envs.close()
        for env in singles:
            env.close()


def test_a_failing_or_lost_session_does_not_take_the_others_down(env_server):
    envs = RemoteSearchVectorEnv(3, server_url=env_server.url, outage_wait_s=30, **DATA)
    try:
        _, infos = envs.reset(seed=0)
        questions = [infos["question"][i] for i in range(3)]
        seen = count_requests(envs)
        too_long = "<search> " + "y" * 2001 + " </search>"  # the server's --max-action-chars is 2000
        obs, rewards, terminated, truncated, infos = envs.step(
            (f"<search> {questions[0]} </search>", too_long, f"<search> {questions[2]} </search>")
        )
        assert seen == Counter({"POST /sessions/step": 1})
        assert obs[0].startswith("\n\n<information>") and obs[2].startswith("\n\n<information>")
        assert truncated.tolist() == [False, True, False] and not terminated.any() and rewards[1] == 0.0
        assert infos["_error_status"].tolist() == [False, True, False] and infos["error_status"][1] == 422
        assert "max_action_chars=2000" in infos["error"][1]

        # Session 2 is lost on the server (expired, or the server restarted): rebuilt by replay, stepped;
        # session 1 autoresets; session 0 steps in the batch.
        lost = envs.envs[2].session_id
        assert httpx.delete(f"{env_server.url}/sessions/{lost}").status_code == 204
        seen.clear()
        obs, rewards, terminated, truncated, infos = envs.step(("<answer>a</answer>", "ignored", "<answer>b</answer>"))
        assert envs.envs[2].rebuilds == 1 and envs.envs[2].session_id != lost
        assert terminated.tolist() == [True, False, True] and not truncated.any()
        assert infos["turn"][0] == 2 and infos["turn"][2] == 2  # the rebuilt episode kept its first turn
        assert seen["POST /sessions/step"] == 1 and seen["POST /sessions/{id}/reset"] == 2  # env 1, replayed env 2
        assert infos["question"][1] and "error" not in infos  # env 1 started a new episode
    finally:
        envs.close()


def test_envs_of_several_clients_are_refused(env_server):
    a, b = (RemoteSearchEnv(env_server.url, **DATA) for _ in range(2))
    try:
        with pytest.raises(ValueError, match="share one client"):
            batched_remote_step([a, b], ["x", "y"])
    finally:
        a.close()
        b.close()


def test_close_frees_every_session(env_server):
    envs = RemoteSearchVectorEnv(3, server_url=env_server.url, **DATA)
    ids = envs.session_ids
    assert len(set(ids)) == 3 and np.all([httpx.get(f"{env_server.url}/sessions/{s}").status_code == 200 for s in ids])
    envs.close()
    assert [httpx.get(f"{env_server.url}/sessions/{s}").status_code for s in ids] == [404] * 3
