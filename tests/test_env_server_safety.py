"""The env server is safe to share, live on loopback: client names are never paths, data loads once,
a step is applied once however often it is retried, a refused reset changes nothing, option values
are checked whole, sessions belong to their creator's token, and /health and errors leak nothing."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from search_env.qa_data import QARecord, load_qa, write_qa_jsonl
from search_env.remote_env import EnvServerUnavailable, RemoteSearchEnv
from search_env.server_process import ServerProcess, free_port

ALICE, BOB = "alice-token", "bob-token"
DATA = {"data": "world:small", "split": "test"}
JSON = {"content-type": "application/json"}


def _records(prefix: str, n: int) -> list[QARecord]:
    return [
        QARecord(id=f"{prefix}{i}", question=f"{prefix} question {i}", golden_answers=[f"{prefix}{i}"])
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mine/ (train, test, and leak.jsonl: a link out to secret/), secret/, broken/, single/dev.jsonl."""
    root = tmp_path_factory.mktemp("qa")
    write_qa_jsonl(_records("mine-train", 3), root / "mine" / "train.jsonl")
    write_qa_jsonl(_records("mine-test", 2), root / "mine" / "test.jsonl")
    write_qa_jsonl(_records("SECRET", 1), root / "secret" / "train.jsonl")
    (root / "mine" / "leak.jsonl").symlink_to(root / "secret" / "train.jsonl")
    (root / "broken").mkdir()
    (root / "broken" / "train.jsonl").write_text('{"question": "q", "golden_answers": ["a"]}\n{oops\n')
    write_qa_jsonl(_records("single", 2), root / "single" / "dev.jsonl")
    return root


@pytest.fixture(scope="module")
def server(bm25_server, data_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    """An env server with two clients' tokens, the small world only, and the operator's data sets."""
    args = [
        "env",
        "--retriever-url",
        bm25_server.url,
        "--worlds",
        "small",
        "--max-obs-chars",
        "4000",
        "--data",
        f"mine={data_dir / 'mine'}",
        "--data",
        f"broken={data_dir / 'broken'}",
        "--data",
        f"single={data_dir / 'single' / 'dev.jsonl'}",
    ]
    log = tmp_path_factory.mktemp("logs") / "env-safety.log"
    proc = ServerProcess(args, log, env={"SEARCHGYM_API_TOKENS": f"{ALICE},{BOB}"}).start()
    try:
        yield proc.wait_ready(timeout=120)
    finally:
        proc.stop()


def _call(server: ServerProcess, method: str, path: str, token: str | None = ALICE, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, server.url + path, headers=headers | kwargs.pop("headers", {}), timeout=60, **kwargs)


def _create(server: ServerProcess, token: str = ALICE, **options) -> str:
    r = _call(server, "POST", "/sessions", token, json={"options": DATA | options})
    assert r.status_code == 201, r.text
    return r.json()["session_id"]


def _loads(server: ServerProcess) -> int:
    return _call(server, "GET", "/info").json()["data_loads"]


# -- names, never paths ---------------------------------------------------------------------------------
def test_a_split_is_a_name_among_the_operators_files(server, data_dir):
    assert _call(server, "GET", "/info").json()["datasets"] == {
        "broken": ["train"],
        "mine": ["test", "train"],
        "single": ["dev"],
        "world:small": ["dev", "test", "train"],
    }
    secret = data_dir / "secret" / "train"
    cases = [
        ({"data": "mine", "split": "../secret/train"}, "split"),
        ({"data": "mine", "split": str(secret)}, "split"),  # an absolute path
        ({"data": "mine", "split": "leak"}, "has no split 'leak'"),  # a link out of the folder
        ({"data": "mine", "split": "notes"}, "has no split 'notes'"),
        ({"data": str(data_dir / "mine")}, "unknown data set"),
        ({"data": "mine", "data_config": "../../secret"}, "data_config"),
        ({"data": "mine", "data_config": "default"}, "takes no data_config"),
        ({"data": "single", "split": "train"}, "its splits are ['dev']"),
    ]
    for options, message in cases:
        r = _call(server, "POST", "/sessions", json={"options": options})
        assert r.status_code == 422 and message in r.json()["detail"], (options, r.text)
        assert "SECRET" not in r.text
        assert str(data_dir) not in r.text or str(data_dir) in str(options)  # no path but the one sent
    described = _call(server, "POST", "/sessions", json={"options": {"data": "mine", "split": "test"}}).json()
    assert described["num_questions"] == 2
    assert _call(server, "POST", "/sessions", json={"options": {"data": "single"}}).json()["num_questions"] == 2


def test_a_data_set_that_fails_to_load_is_a_422_naming_no_file(server, data_dir):
    r = _call(server, "POST", "/sessions", json={"options": {"data": "broken"}})
    assert r.status_code == 422 and "could not be loaded" in r.json()["detail"], r.text
    assert str(data_dir) not in r.text and "Traceback" not in r.text
    assert str(data_dir / "broken" / "train.jsonl") in server.log_path.read_text()  # the operator reads why


# -- loaded once, presets chosen by the operator ----------------------------------------------------------
def test_only_the_operators_world_presets_are_served(server):
    for preset in ("world:large", "world:tiny", "world"):
        r = _call(server, "POST", "/sessions", json={"options": {"data": preset}})
        assert r.status_code == 422 and "unknown data set" in r.json()["detail"], r.text


def test_sessions_of_many_hops_share_one_load(server):
    before = _loads(server)
    hops = [[1], [2], [3], [1, 2], [2, 3], [1, 3], [1, 2, 3], [3, 2, 1], [1, 7], [9, 2], [1, 2, 3, 4], [5, 3]]
    ids = [_create(server, split="dev", hops=h) for h in hops]
    assert _loads(server) == before + 1 and len(set(ids)) == 12
    r = _call(server, "POST", "/sessions", json={"options": {**DATA, "split": "dev", "hops": [9]}})
    assert r.status_code == 422 and "no questions with hops [9]" in r.json()["detail"]
    for sid in ids:
        _call(server, "DELETE", f"/sessions/{sid}")


def test_concurrent_creates_on_unloaded_data_load_it_once(server):
    before = _loads(server)
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: _create(server, split="train"), range(8)))
    assert _loads(server) == before + 1 and len(set(ids)) == 8
    for sid in ids:
        _call(server, "DELETE", f"/sessions/{sid}")


# -- applied once ------------------------------------------------------------------------------------------
def test_a_replayed_step_gets_the_recorded_answer(server):
    sid = _create(server)
    _call(server, "POST", f"/sessions/{sid}/reset", json={"options": {"index": 0}}).raise_for_status()
    body = {"action": "<search> river founded </search>", "request_id": "step-0001"}
    first = _call(server, "POST", f"/sessions/{sid}/step", json=body)
    again = _call(server, "POST", f"/sessions/{sid}/step", json=body)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert _call(server, "GET", f"/sessions/{sid}").json()["turn"] == 1
    reused = _call(server, "POST", f"/sessions/{sid}/step", json=body | {"action": "<answer>x</answer>"})
    assert reused.status_code == 409 and "already used for a different request" in reused.json()["detail"]
    final = _call(
        server, "POST", f"/sessions/{sid}/step", json={"action": "<answer>x</answer>", "request_id": "step-0002"}
    )
    assert final.json()["terminated"] and final.json()["info"]["turn"] == 2
    # The episode is over, yet the replay of its last step still gets its answer, not a 409.
    assert (
        _call(
            server, "POST", f"/sessions/{sid}/step", json={"action": "<answer>x</answer>", "request_id": "step-0002"}
        ).json()
        == final.json()
    )


def test_a_replayed_batched_step_steps_only_the_new_items(server):
    ids = [_create(server) for _ in range(3)]
    for i, sid in enumerate(ids):
        _call(server, "POST", f"/sessions/{sid}/reset", json={"options": {"index": i}}).raise_for_status()
    steps = [
        {"session_id": sid, "action": f"<search> query {i} </search>", "request_id": f"batch-00-{i}"}
        for i, sid in enumerate(ids[:2])
    ]
    first = _call(server, "POST", "/sessions/step", json={"steps": steps}).json()
    replay = _call(server, "POST", "/sessions/step", json={"steps": steps}).json()
    assert replay == first
    mixed = [*steps, {"session_id": ids[2], "action": "<answer>x</answer>", "request_id": "batch-00-2"}]
    results = _call(server, "POST", "/sessions/step", json={"steps": mixed}).json()["results"]
    assert [r["result"]["info"]["turn"] for r in results] == [1, 1, 1]
    assert results[:2] == first["results"] and results[2]["result"]["terminated"]
    assert [_call(server, "GET", f"/sessions/{sid}").json()["turn"] for sid in ids] == [1, 1, 1]


def test_a_replayed_create_gets_the_same_session(server):
    body = {"options": DATA, "request_id": "create-0001"}
    first = _call(server, "POST", "/sessions", json=body)
    again = _call(server, "POST", "/sessions", json=body)
    assert first.status_code == again.status_code == 201
    assert first.json()["session_id"] == again.json()["session_id"]
    listed = [s["session_id"] for s in _call(server, "GET", "/sessions").json()]
    assert listed.count(first.json()["session_id"]) == 1
    other = _call(server, "POST", "/sessions", json={"options": DATA | {"max_turns": 2}, "request_id": "create-0001"})
    assert other.status_code == 409
    bobs = _call(server, "POST", "/sessions", BOB, json=body)  # the same id from another client: its own
    assert bobs.status_code == 201 and bobs.json()["session_id"] != first.json()["session_id"]


def test_a_step_retried_while_the_retriever_stalls_is_applied_once(server, bm25_server):
    env = RemoteSearchEnv(server.url, token=ALICE, timeout=2.0, retries=2, backoff=0.05, **DATA)
    env.reset(options={"index": 0})
    assert bm25_server.proc is not None
    bm25_server.proc.send_signal(signal.SIGSTOP)  # a real retriever that stalls: every attempt times out
    try:
        with pytest.raises(EnvServerUnavailable, match="3 attempts"):
            env.step("<search> river founded </search>")
        health = _call(server, "GET", "/health", token=None)
        assert health.status_code == 200 and health.json()["status"] == "degraded"
        assert bm25_server.url not in health.text and str(bm25_server.port) not in health.text
    finally:
        bm25_server.proc.send_signal(signal.SIGCONT)
    obs, reward, terminated, _, info = env.step("<answer>x</answer>")
    assert terminated and info["turn"] == 2 and info["searches"] == ["river founded"]
    env.close()
    for _ in range(50):  # bounded: the retriever's first answers after SIGCONT may lag the probe's timeout
        if _call(server, "GET", "/health", token=None).json()["status"] == "ready":
            break
    assert _call(server, "GET", "/health", token=None).json() == {"status": "ready", "detail": None}


# -- refused resets and bad option values ----------------------------------------------------------------------
def test_a_refused_reset_changes_nothing(server, small_world):
    record = load_qa(small_world.qa["test"])[0]
    sid = _create(server)
    _call(server, "POST", f"/sessions/{sid}/reset", json={"options": {"index": 0}}).raise_for_status()
    _call(server, "POST", f"/sessions/{sid}/step", json={"action": "<search> river </search>"}).raise_for_status()
    refused = [
        ({"options": {"question": "q" * 5000, "golden_answers": ["zzz"]}}, "max_prompt_chars=4000"),
        ({"options": {"index": True}}, "options.index"),
        ({"options": {"index": 10**6}}, "index must be"),
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"options": {"index": 1, "question": "q", "golden_answers": ["zzz"]}}, "give one of"),
        ({"options": {"question": "q", "golden_answers": []}}, "golden_answers"),
        ({"options": {"idx": 1}}, "idx"),
    ]
    for body, message in refused:
        r = _call(server, "POST", f"/sessions/{sid}/reset", json=body)
        assert r.status_code == 422 and message in r.json()["detail"], (body, r.text)
        described = _call(server, "GET", f"/sessions/{sid}").json()
        assert described["turn"] == 1 and described["episode_active"], body
    done = _call(server, "POST", f"/sessions/{sid}/step", json={"action": "<answer>zzz</answer>"}).json()
    assert done["reward"] == 0.0 and done["info"]["turn"] == 2
    assert done["info"]["question_id"] == record.id and done["info"]["golden_answers"] == record.golden_answers


def test_option_values_are_validated_whole(server):
    raw = [  # Infinity and NaN, which Python's parser would accept, are not JSON: the body guard refuses them
        b'{"options": {"data": "world:small", "topk": Infinity}}',
        b'{"options": {"data": "world:small", "max_turns": NaN}}',
        b'{"options": {"data": "world:small", "format_score": -Infinity}}',
    ]
    for content in raw:
        r = _call(server, "POST", "/sessions", content=content, headers=JSON)
        assert r.status_code == 400 and "is not a JSON value" in r.json()["detail"], r.text
    cases = [
        ({"max_turns": 2.5}, "max_turns"),
        ({"topk": True}, "topk"),
        ({"topk": "3"}, "topk"),
        ({"limit": 0}, "limit"),
        ({"hops": [True]}, "hops"),
        ({"hops": "1"}, "hops"),
        ({"reward": "bleu"}, "reward"),
        ({"prompt_template": "{question} {answer}"}, "'{answer}'"),
        ({"prompt_template": "{question.__class__.__mro__}"}, "question.__class__"),
        ({"prompt_template": "{question:>999999999}"}, "plain '{question}'"),
        ({"prompt_template": "{question!r}"}, "plain '{question}'"),
        ({"prompt_template": "no field"}, "must contain '{question}'"),
        ({"prompt_template": "{question"}, "not a valid format string"),
    ]
    for options, message in cases:
        r = _call(server, "POST", "/sessions", json={"options": DATA | options})
        assert r.status_code == 422 and message in r.json()["detail"], (options, r.text)
    assert _call(server, "GET", "/health", token=None).json()["status"] == "ready"


# -- cost bounded before work --------------------------------------------------------------------------------------
def _memory_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def test_a_prompt_too_big_is_refused_before_it_is_built(server):
    """The issue's example, at the field limit: 16 fields x a 16 MB question would be a 256 MB prompt.
    Its size is computed from the template's shape, so the server's peak memory stays far below that."""
    bob = _create(server, BOB)
    _call(server, "POST", f"/sessions/{bob}/reset", BOB, json={"options": {"index": 0}}).raise_for_status()
    sid = _create(server, prompt_template="Q: {question}\n" * 16)
    question = "q" * (16 * 2**20)
    assert server.proc is not None
    pid = server.proc.pid
    before = _memory_kib(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak (VmHWM) from here on
    r = _call(
        server, "POST", f"/sessions/{sid}/reset", json={"options": {"question": question, "golden_answers": ["a"]}}
    )
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "16 question fields" in detail and "max_prompt_chars=4000" in detail and "--max-prompt-chars" in detail
    grown_mib = (_memory_kib(pid, "VmHWM") - before) / 1024
    # Reading and decoding the 16 MB body takes a few copies of it; the prompt would have taken 16.
    assert grown_mib < 128, grown_mib
    assert not _call(server, "GET", f"/sessions/{sid}").json()["episode_active"]
    # The other tenant's episode goes on.
    step = _call(server, "POST", f"/sessions/{bob}/step", BOB, json={"action": "<search> river </search>"})
    assert step.status_code == 200 and step.json()["info"]["turn"] == 1, step.text


def test_prompts_of_many_fields_are_refused_by_their_size(server):
    many = _call(server, "POST", "/sessions", json={"options": DATA | {"prompt_template": "{question}" * 1600}})
    assert many.status_code == 422 and "1600 '{question}' fields, more than the 16 allowed" in many.text, many.text
    sid = _create(server, prompt_template="{question} " * 16)
    _call(server, "POST", f"/sessions/{sid}/reset", json={"options": {"index": 0}}).raise_for_status()
    for chars, status in ((300, 422), (200, 200)):  # 16 x 301 > 4000 >= 16 x 201 + 16
        body = {"options": {"question": "w" * chars, "golden_answers": ["a"]}}
        r = _call(server, "POST", f"/sessions/{sid}/reset", json=body)
        assert r.status_code == status, (chars, r.text)
    # A template the limit cannot hold with any question is refused when the session is created.
    r = _call(server, "POST", "/sessions", json={"options": DATA | {"prompt_template": "x" * 4000 + "{question}"}})
    assert r.status_code == 422 and "--max-prompt-chars" in r.json()["detail"], r.text


def test_a_resets_own_golden_answers_are_bounded(server):
    bob = _create(server, BOB)
    sid = _create(server)
    cases = [
        (["g" * 100] * 256, "25600 characters in all (256 answers)"),  # each small, many: past 16384 in all
        (["g" * 20000], "20000 characters in all (1 answers)"),  # one long
        (["g"] * 257, "golden_answers"),  # past the count
    ]
    for golds, message in cases:
        r = _call(
            server, "POST", f"/sessions/{sid}/reset", json={"options": {"question": "q", "golden_answers": golds}}
        )
        assert r.status_code == 422 and message in r.json()["detail"], r.text[:300]
        assert "--max-golden-chars" in r.json()["detail"] or "257" not in message
    golds = ["g" * 64] * 256  # 16384 in all: at the limit
    ok = _call(server, "POST", f"/sessions/{sid}/reset", json={"options": {"question": "q", "golden_answers": golds}})
    assert ok.status_code == 200, ok.text[:300]
    done = _call(server, "POST", f"/sessions/{sid}/step", json={"action": "<answer>" + "g" * 64 + "</answer>"}).json()
    assert done["reward"] == 1.0
    limits = _call(server, "GET", "/info").json()["limits"]
    assert limits["max_prompt_chars"] == 4000 and limits["max_golden_chars"] == 16384
    _call(server, "POST", f"/sessions/{bob}/reset", BOB, json={"options": {"index": 0}}).raise_for_status()


# -- ownership --------------------------------------------------------------------------------------------------
def test_a_session_is_used_only_with_the_token_that_created_it(server):
    sid = _create(server, ALICE)
    assert len(sid) >= 24 and sid not in {s["session_id"] for s in _call(server, "GET", "/sessions", BOB).json()}
    assert sid in {s["session_id"] for s in _call(server, "GET", "/sessions", ALICE).json()}
    for method, path, kwargs in [
        ("GET", f"/sessions/{sid}", {}),
        ("POST", f"/sessions/{sid}/reset", {"json": {"seed": 0}}),
        ("POST", f"/sessions/{sid}/step", {"json": {"action": "<answer>x</answer>"}}),
        ("DELETE", f"/sessions/{sid}", {}),
    ]:
        r = _call(server, method, path, BOB, **kwargs)
        assert r.status_code == 404 and "no session" in r.json()["detail"], (method, path, r.text)
    batch = _call(server, "POST", "/sessions/step", BOB, json={"steps": [{"session_id": sid, "action": "x"}]})
    assert batch.json()["results"][0]["error"]["status"] == 404
    assert _call(server, "POST", "/sessions", token=None, json={"options": DATA}).status_code == 401
    assert _call(server, "POST", "/sessions", token="carol-token", json={"options": DATA}).status_code == 401
    # Alice's session is untouched, and the scheme is case-insensitive (RFC 7235).
    for scheme in ("bearer", "BEARER", "Bearer"):
        r = httpx.get(f"{server.url}/sessions/{sid}", headers={"Authorization": f"{scheme} {ALICE}"})
        assert r.status_code == 200 and r.json()["episode_active"] is False, scheme
    ids = {_create(server, BOB) for _ in range(5)}
    assert len(ids) == 5 and all(len(i) >= 24 for i in ids)
    assert _call(server, "DELETE", f"/sessions/{sid}", ALICE).status_code == 204


# -- health -------------------------------------------------------------------------------------------------
def test_health_says_degraded_while_the_retriever_is_down(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}"
    proc = ServerProcess(["env", "--retriever-url", dead, "--worlds", ""], tmp_path / "env.log").start()
    try:
        proc.wait_ready(timeout=120)  # the server itself is up: 200
        body = httpx.get(proc.url + "/health").json()
        assert body["status"] == "degraded" and "unreachable" in body["detail"]
        assert dead not in str(body) and "Traceback" not in str(body)
        r = httpx.post(proc.url + "/sessions", json={"options": {"data": "world:small"}})
        assert r.status_code == 422 and "unknown data set" in r.json()["detail"]  # no world served
    finally:
        proc.stop()


def test_a_bad_data_flag_stops_the_server_with_a_message(tmp_path):
    (tmp_path / "empty").mkdir()
    for flag, message in [
        (f"x={tmp_path / 'empty'}", "no QA files"),
        (f"x={tmp_path / 'missing'}", "no such file"),
        ("world:mine=x", "reserved"),
    ]:
        proc = ServerProcess(["env", "--data", flag], tmp_path / "bad.log").start()
        assert proc.proc is not None and proc.proc.wait(timeout=120) != 0
        assert message in proc.log_tail(), proc.log_tail()


def test_a_prompt_limit_over_the_observation_limit_stops_the_server_with_a_message(tmp_path):
    args = ["env", "--max-obs-chars", "1000", "--max-prompt-chars", "2000"]
    proc = ServerProcess(args, tmp_path / "bad.log").start()
    assert proc.proc is not None and proc.proc.wait(timeout=120) == 2
    assert "--max-prompt-chars must be in [1, --max-obs-chars=1000]" in proc.log_tail(), proc.log_tail()
