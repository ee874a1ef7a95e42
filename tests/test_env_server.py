"""The env server and RemoteSearchEnv, live on loopback: whole episodes through gymnasium.make,
batched steps, session limits, every bad input, and a retriever killed mid-episode."""

from __future__ import annotations

import time

import gymnasium
import httpx
import pytest
from gymnasium.utils.env_checker import check_env

import search_env  # noqa: F401 - registers the ids
from search_env.remote_env import EnvServerRefused, EnvServerUnavailable, RemoteSearchEnv
from search_env.retriever_client import RetrieverClient
from search_env.server_process import ServerProcess, free_port

DATA = {"data": "world:small", "split": "test"}
JSON = {"content-type": "application/json"}


def _create(url: str, **options) -> str:
    r = httpx.post(url + "/sessions", json={"env_id": "searchgym/SearchQA-v0", "options": DATA | options})
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def test_scripted_agent_plays_whole_episodes_through_gymnasium_make(env_server, small_world):
    from search_env.qa_data import load_qa

    records = load_qa(small_world.qa["test"])
    env = gymnasium.make("searchgym/RemoteSearchQA-v0", server_url=env_server.url, **DATA, max_turns=3)
    total = 0.0
    for index in range(6):
        obs, info = env.reset(options={"index": index})
        assert f"Question: {records[index].question}" in obs and info["question_id"] == records[index].id
        obs, reward, terminated, truncated, info = env.step(f"<search> {records[index].question} </search>")
        assert obs.startswith("\n\n<information>Doc 1(Title:") and reward == 0 and not (terminated or truncated)
        answer = records[index].golden_answers[0] if index % 2 == 0 else "wrong answer"
        obs, reward, terminated, truncated, info = env.step(f"<answer>{answer}</answer>")
        assert terminated and not truncated and obs == ""
        assert reward == (1.0 if index % 2 == 0 else 0.0) and info["golden_answers"] == records[index].golden_answers
        total += reward
    assert total == 3.0
    # Truncation at max_turns, through the remote env too.
    env.reset(options={"index": 0})
    outcomes = [env.step("no tags at all")[2:4] for _ in range(3)]
    assert outcomes == [(False, False), (False, False), (False, True)]
    env.close()


def test_check_env_passes_on_the_remote_env(env_server):
    env = RemoteSearchEnv(env_server.url, **DATA)
    check_env(env, skip_render_check=True)
    env.close()


def test_close_frees_the_session(env_server):
    env = RemoteSearchEnv(env_server.url, **DATA)
    sid = env.session_id
    assert httpx.get(f"{env_server.url}/sessions/{sid}").status_code == 200
    env.close()
    assert httpx.get(f"{env_server.url}/sessions/{sid}").status_code == 404


def test_batched_step_searches_many_sessions_in_one_retrieve_request(env_server, bm25_server):
    ids = [_create(env_server.url) for _ in range(8)]
    for i, sid in enumerate(ids):
        httpx.post(f"{env_server.url}/sessions/{sid}/reset", json={"options": {"index": i}}).raise_for_status()
    before = httpx.get(bm25_server.url + "/info").json()["traffic"]["requests"]
    steps = [{"session_id": sid, "action": f"<search> query {i} </search>"} for i, sid in enumerate(ids)]
    steps.append({"session_id": "no-such-session", "action": "<answer>x</answer>"})
    r = httpx.post(env_server.url + "/sessions/step", json={"steps": steps})
    assert r.status_code == 200
    results = r.json()["results"]
    assert all(x["result"]["observation"].startswith("\n\n<information>") for x in results[:8])
    assert results[8]["error"]["status"] == 404 and results[8]["result"] is None
    after = httpx.get(bm25_server.url + "/info").json()["traffic"]["requests"]
    assert after == before + 1
    for sid in ids:
        httpx.delete(f"{env_server.url}/sessions/{sid}")


def test_sessions_are_listed_and_described(env_server):
    sid = _create(env_server.url, max_turns=2)
    listed = {s["session_id"]: s for s in httpx.get(env_server.url + "/sessions").json()}
    assert listed[sid]["options"]["max_turns"] == 2 and listed[sid]["episode_active"] is False
    httpx.post(f"{env_server.url}/sessions/{sid}/reset", json={"seed": 1}).raise_for_status()
    assert httpx.get(f"{env_server.url}/sessions/{sid}").json()["episode_active"] is True
    httpx.delete(f"{env_server.url}/sessions/{sid}")


def test_a_topk_the_retriever_would_refuse_is_refused_at_create(env_server, bm25_server):
    max_topk = httpx.get(bm25_server.url + "/info").json()["limits"]["max_topk"]
    for topk in (max_topk + 1, 200):  # the env schema allows up to 1,000
        r = httpx.post(
            env_server.url + "/sessions", json={"env_id": "searchgym/SearchQA-v0", "options": DATA | {"topk": topk}}
        )
        assert r.status_code == 422 and f"topk={topk}" in r.text and f"topk <= {max_topk}" in r.text, r.text
    sid = _create(env_server.url, topk=max_topk)  # the limit itself is served
    r = httpx.post(f"{env_server.url}/sessions/{sid}/reset", json={"seed": 0})
    r.raise_for_status()
    step = httpx.post(f"{env_server.url}/sessions/{sid}/step", json={"action": "<search> river founded </search>"})
    assert step.status_code == 200 and step.json()["observation"].count("Doc ") == max_topk  # all of them came
    httpx.delete(f"{env_server.url}/sessions/{sid}")


# -- bad input: each a 4xx with a message; the server and other sessions carry on --------------------
def test_bad_inputs_get_4xx_and_leave_other_sessions_untouched(env_server):
    url = env_server.url
    bystander = _create(url)
    httpx.post(f"{url}/sessions/{bystander}/reset", json={"options": {"index": 3}}).raise_for_status()
    fresh = _create(url)
    ended = _create(url)
    httpx.post(f"{url}/sessions/{ended}/reset", json={"seed": 0}).raise_for_status()
    httpx.post(f"{url}/sessions/{ended}/step", json={"action": "<answer>x</answer>"}).raise_for_status()
    cases = [
        (("POST", "/sessions/nope/step", {"json": {"action": "x"}}), 404, "no session 'nope'"),
        (("POST", "/sessions/nope/reset", {"json": {}}), 404, "no session"),
        (("DELETE", "/sessions/nope", {}), 404, "no session"),
        (("POST", f"/sessions/{fresh}/step", {"json": {"action": "<answer>x</answer>"}}), 409, "call reset() first"),
        (("POST", f"/sessions/{ended}/step", {"json": {"action": "<answer>x</answer>"}}), 409, "episode has ended"),
        (("POST", f"/sessions/{fresh}/reset", {"json": {"options": {"index": 10**6}}}), 422, "index must be"),
        (("POST", f"/sessions/{ended}/reset", {"json": {"seed": "x"}}), 422, "seed"),
        (("POST", f"/sessions/{ended}/step", {"json": {"action": "y" * 2001}}), 422, "max_action_chars=2000"),
        (("POST", f"/sessions/{ended}/step", {"json": {"act": "typo"}}), 422, "action"),
        (("POST", f"/sessions/{ended}/step", {"json": {"action": 5}}), 422, "action"),
        (("POST", "/sessions", {"json": {"env_id": "searchgym/Nope-v9"}}), 404, "unknown env id"),
        (("POST", "/sessions", {"json": {"options": {"max_turn": 3}}}), 422, "unknown env options ['max_turn']"),
        (("POST", "/sessions", {"json": {"options": {"data": "/etc/passwd"}}}), 422, "unknown data set"),
        (("POST", "/sessions", {"json": {"options": {"topk": 0}}}), 422, "topk"),
        (("POST", "/sessions", {"content": b"{oops", "headers": JSON}), 400, "not valid JSON"),
        (("POST", f"/sessions/{ended}/step", {"content": b"\xff\xfe\xfa", "headers": JSON}), 400, "UTF-8"),
        (("POST", "/sessions/step", {"json": {"steps": [{"session_id": ended, "action": "x"}] * 4097}}), 422,
         "too many steps"),
    ]
    for (method, path, kwargs), status, message in cases:
        r = httpx.request(method, url + path, **kwargs)
        assert r.status_code == status, (path, r.text)
        assert message in r.json()["detail"], (path, r.text)
    done = httpx.post(f"{url}/sessions/{bystander}/step", json={"action": "<answer>z</answer>"}).json()
    assert done["terminated"] and done["info"]["turn"] == 1
    for sid in (bystander, fresh, ended):
        httpx.delete(f"{url}/sessions/{sid}")


def test_a_lone_surrogate_in_an_action_is_answered(env_server):
    sid = _create(env_server.url)
    httpx.post(f"{env_server.url}/sessions/{sid}/reset", json={"options": {"index": 0}}).raise_for_status()
    raw = b'{"action": "<search> Name \\ud83d river </search>"}'  # valid JSON, not text
    r = httpx.post(f"{env_server.url}/sessions/{sid}/step", content=raw, headers=JSON)
    assert r.status_code == 200, r.text
    assert r.json()["info"]["query"] == "Name \ufffd river" and r.json()["info"]["search_error"] is None
    httpx.delete(f"{env_server.url}/sessions/{sid}")
    env = RemoteSearchEnv(env_server.url, **DATA)  # its client sends any str, escaped
    env.reset(options={"index": 1})
    obs, _, _, _, info = env.step("<search> river \udc00 founded </search>")
    assert obs.startswith("\n\n<information>Doc 1(Title:") and info["query"] == "river \ufffd founded"
    env.close()


def test_a_refused_search_is_that_sessions_observation_in_a_batch(strict_server, tmp_path):
    args = ["env", "--retriever-url", strict_server.url, "--max-action-chars", "8192"]
    server = ServerProcess(args, tmp_path / "env.log").start().wait_ready(timeout=120)
    try:
        ids = [_create(server.url) for _ in range(3)]
        for i, sid in enumerate(ids):
            httpx.post(f"{server.url}/sessions/{sid}/reset", json={"options": {"index": i}}).raise_for_status()
        actions = ["<search> river founded </search>", "<search> " + "harbour " * 1000 + "</search>",
                   "<search> painted ceiling </search>"]
        steps = [{"session_id": sid, "action": a} for sid, a in zip(ids, actions, strict=True)]
        r = httpx.post(server.url + "/sessions/step", json={"steps": steps})
        assert r.status_code == 200, r.text
        results = [x["result"] for x in r.json()["results"]]
        assert results[1]["observation"].startswith("\n\n<information>Search failed: the retrieval server (strict)")
        assert results[1]["info"]["search_error"] and results[1]["info"]["turn"] == 1
        for i in (0, 2):
            assert results[i]["observation"].startswith("\n\n<information>Doc 1(Title:")
            assert results[i]["info"]["search_error"] is None and results[i]["info"]["retrieved_ids"]
    finally:
        server.stop()


def test_remote_env_raises_the_servers_refusal(env_server):
    env = RemoteSearchEnv(env_server.url, **DATA)
    with pytest.raises(EnvServerRefused, match="call reset"):
        env.step("<answer>x</answer>")
    env.close()
    with pytest.raises(EnvServerRefused, match="unknown env options"):
        RemoteSearchEnv(env_server.url, **DATA, bogus=1)


def test_session_cap_and_idle_expiry(bm25_server, tmp_path):
    args = ["env", "--retriever-url", bm25_server.url, "--max-sessions", "2", "--idle-timeout", "1"]
    server = ServerProcess(args, tmp_path / "env.log").start().wait_ready(timeout=120)
    try:
        a, b = _create(server.url), _create(server.url)
        r = httpx.post(server.url + "/sessions", json={"options": DATA})
        assert r.status_code == 429 and "too many live sessions (limit 2)" in r.json()["detail"]
        time.sleep(2.5)  # both idle past the 1 s timeout; the reaper runs every 0.25 s
        assert httpx.get(f"{server.url}/sessions/{a}").status_code == 404
        assert httpx.get(f"{server.url}/sessions/{b}").status_code == 404
        assert httpx.get(server.url + "/info").json()["sessions_expired"] == 2
        _create(server.url)  # room again
    finally:
        server.stop()


def test_token_guards_the_env_server(bm25_server, tmp_path):
    args = ["env", "--retriever-url", bm25_server.url]
    server = ServerProcess(args, tmp_path / "env.log", env={"SEARCHGYM_API_TOKEN": "tok"}).start()
    server.wait_ready(timeout=120)
    try:
        assert httpx.post(server.url + "/sessions", json={"options": DATA}).status_code == 401
        # The server passes its token on to the retriever, which here needs none.
        env = RemoteSearchEnv(server.url, token="tok", **DATA)
        env.reset(options={"index": 0})
        assert env.step("<search> river </search>")[0].startswith("\n\n<information>")
        env.close()
    finally:
        server.stop()


def test_retriever_killed_mid_episode_then_restarted(small_world, bm25_server, tmp_path):
    port = free_port()
    retriever_args = ["retriever", "--backend", "bm25", "--world", "small"]
    retriever = ServerProcess(retriever_args, tmp_path / "r1.log", port=port).start().wait_ready()
    env_args = ["env", "--retriever-url", retriever.url, "--retriever-retries", "0"]
    env_srv = ServerProcess(env_args, tmp_path / "env.log").start().wait_ready(timeout=120)
    try:
        env = RemoteSearchEnv(env_srv.url, retries=0, **DATA)
        env.reset(options={"index": 0})
        first = env.step("<search> river </search>")
        assert first[0].startswith("\n\n<information>")
        retriever.stop()

        with pytest.raises(EnvServerUnavailable, match="retrieval server") as err:
            env.step("<search> the same query again </search>")
        assert retriever.url in str(err.value) and "retry the step" in str(err.value)
        described = httpx.get(f"{env_srv.url}/sessions/{env.session_id}").json()
        assert described["turn"] == 1 and described["episode_active"]  # the failed step changed nothing

        retriever = ServerProcess(retriever_args, tmp_path / "r2.log", port=port).start().wait_ready()
        obs, reward, terminated, truncated, info = env.step("<search> the same query again </search>")
        assert obs.startswith("\n\n<information>") and info["turn"] == 2
        assert info["num_searches"] == 2 and info["query"] == "the same query again"
        env.close()
    finally:
        env_srv.stop()
        retriever.stop()


def test_env_server_info(env_server, bm25_server):
    info = httpx.get(env_server.url + "/info").json()
    assert "searchgym/SearchQA-v0" in info["env_ids"] and info["retriever_url"] == bm25_server.url
    assert info["limits"]["max_action_chars"] == 2000
    assert RetrieverClient(info["retriever_url"]).info()["state"] == "ready"
