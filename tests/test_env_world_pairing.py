"""The env server refuses a session on an embedded world its retriever does not serve (409, naming both
worlds), says so at start-up for the worlds it was given, and checks nothing against a retriever that
reports no corpora. The test BM25 retriever serves the small world; the tiny world's data cannot be
answered from it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from agent_server.env.app import create_env_app
from search_env.server_process import ServerProcess
from search_env.world.store import ensure_world
from tests.thread_server import serving


@pytest.fixture(scope="module")
def paired_env(bm25_server, tmp_path_factory) -> Iterator[ServerProcess]:
    """An env server offering the tiny and small worlds in front of the small world's retriever."""
    ensure_world("tiny")
    log = tmp_path_factory.mktemp("logs") / "env-world-pairing.log"
    server = ServerProcess(["env", "--retriever-url", bm25_server.url, "--worlds", "tiny,small"], log).start()
    try:
        yield server.wait_ready(timeout=120)
    finally:
        server.stop()


def _create(url: str, data: str) -> httpx.Response:
    return httpx.post(url + "/sessions", json={"options": {"data": data, "split": "test"}}, timeout=60)


def test_a_session_on_a_world_the_retriever_does_not_serve_is_refused_naming_both(paired_env, bm25_server):
    r = _create(paired_env.url, "world:tiny")
    assert r.status_code == 409, r.text
    detail = r.json()["detail"]
    assert "the data are world:tiny" in detail and "serves world 'small'" in detail, detail
    assert bm25_server.url in detail and "\n" not in detail
    again = _create(paired_env.url, "world:tiny")  # the verdict is kept: the same answer
    assert again.status_code == 409 and again.json()["detail"] == detail


def test_a_session_on_the_served_world_is_created(paired_env):
    r = _create(paired_env.url, "world:small")
    assert r.status_code == 201, r.text
    assert r.json()["num_questions"] > 0
    httpx.delete(f"{paired_env.url}/sessions/{r.json()['session_id']}", timeout=10)


def test_the_start_up_log_names_each_given_world_the_retriever_cannot_answer(paired_env):
    deadline = time.monotonic() + 60  # the check runs in the background after start-up
    while "sessions on world:tiny will be refused" not in paired_env.log_path.read_text():
        assert time.monotonic() < deadline, paired_env.log_tail()
        time.sleep(0.1)
    lines = [line for line in paired_env.log_path.read_text().splitlines() if "will be refused" in line]
    assert len(lines) == 1 and "WARNING" in lines[0] and "world 'small'" in lines[0], lines


def _stand_in(info: dict | None, hits: list[str]) -> FastAPI:
    """A retriever of another make: Search-R1's own server (no /info at all), or one serving a prebuilt
    index whose corpus file it does not have (corpora without a fingerprint)."""
    app = FastAPI()

    @app.post("/retrieve")
    def retrieve(body: dict) -> dict:
        return {"result": [[] for _ in body.get("queries", [])]}

    if info is not None:

        @app.get("/info")
        def get_info() -> dict:
            hits.append("/info")
            return info

    return app


@pytest.mark.parametrize(
    "info", [None, {"corpora": [{"path": "/gone/corpus.jsonl", "fingerprint": None}]}], ids=["search-r1", "prebuilt"]
)
def test_a_retriever_reporting_no_corpora_is_not_refused(info, small_world, tmp_path: Path):
    ensure_world("tiny")
    hits: list[str] = []
    with serving(_stand_in(info, hits)) as retriever_url:
        app = create_env_app(retriever_url, worlds=["tiny", "small"], retriever_info_ttl_s=3600)
        with serving(app) as env_url:
            for data in ("world:tiny", "world:small", "world:tiny"):
                r = _create(env_url, data)
                assert r.status_code == 201, r.text
    assert len(hits) == (0 if info is None else 1)  # /info asked once for all creates, within its ttl


def test_a_trainer_on_the_env_server_gets_the_one_line_message_before_loading_a_model(paired_env, tmp_path, capsys):
    """Its retriever URL leads nowhere: only the env server can have named the worlds."""
    from trainer.cli import main as trainer_main

    args = ["train", "--data", "world:tiny", "--env-url", paired_env.url, "--retriever-url", "http://127.0.0.1:9"]
    assert trainer_main([*args, "--model", "smollm2", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("search-trainer: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "the data are world:tiny" in lines[0] and "serves world 'small'" in lines[0], lines[0]
    # The preflight's WorldMismatch, not the refusal of the first rollout's sessions (after the model load).
    assert "refused the run's sessions" not in lines[0]
    assert not list(tmp_path.rglob("metrics.jsonl"))
