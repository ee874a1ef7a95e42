"""`search-env eval` survives a slow or failing OpenAI-compatible endpoint (issue 14.4): a stand-in
endpoint on loopback (uvicorn in a thread) that times out on one question and answers 500 on
another; the run records those episodes as failed, goes on, and writes the table and the summary;
Ctrl-C (a real SIGINT to a real `search-env eval` process) still writes them.

The policy answers at once, so no search (and no retriever) is needed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from search_env.cli import main
from search_env.evaluation.datasets import load_eval_records, parse_data_spec
from search_env.evaluation.openai_policy import DEFAULT_BASE_URL
from search_env.evaluation.results import read_jsonl
from search_env.search_qa_env import DEFAULT_RETRIEVER_URL
from tests.thread_server import serving

NO_RETRIEVER = "http://127.0.0.1:9"  # never contacted: every episode answers without searching


class FlakyEndpoint:
    """Answers `<answer> x` to every question but `slow` ones (it sleeps past the client's timeout)
    and `failing` ones (HTTP 500); after `block_after` requests every request sleeps `block_s`."""

    def __init__(self, slow: set[str] = frozenset(), failing: set[str] = frozenset(), block_after: int | None = None):
        self.requests: list[str] = []
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            question = body["messages"][-1]["content"].rpartition("Question:")[2].strip()
            self.requests.append(question)
            if question in slow or (block_after is not None and len(self.requests) > block_after):
                await asyncio.sleep(3)
            if question in failing:
                return JSONResponse({"error": "model crashed"}, status_code=500)
            message = {"role": "assistant", "content": "<answer> x"}
            return {"choices": [{"index": 0, "message": message, "finish_reason": "stop", "stop_reason": "</answer>"}]}

        self.app = app


def _questions(n: int) -> list[str]:
    return [r.question for r in load_eval_records(parse_data_spec("world:small")[0])[:n]]


def _eval_args(base_url: str, out: Path, limit: int) -> list[str]:
    return [
        "eval", "--policy", "openai", "--model", "m", "--base-url", base_url, "--data", "world:small",
        "--limit", str(limit), "--retriever-url", NO_RETRIEVER, "--out", str(out), "--no-progress",
    ]  # fmt: skip


def test_failed_episodes_are_counted_and_the_run_goes_on(small_world, tmp_path: Path, capsys) -> None:
    questions = _questions(6)
    endpoint = FlakyEndpoint(slow={questions[1]}, failing={questions[3]})
    out = tmp_path / "flaky.jsonl"
    with serving(endpoint.app, timeout_graceful_shutdown=1) as url:
        args = [*_eval_args(f"{url}/v1", out, 6), "--request-timeout", "0.5", "--retries", "1", "--concurrency", "2"]
        assert main(args) == 0
    printed = capsys.readouterr().out
    assert "failed" in printed and "failed episodes: 2" in printed
    episodes = {e["question"]: e for e in read_jsonl(out)}
    assert len(episodes) == 6
    assert {q for q, e in episodes.items() if e["failed"]} == {questions[1], questions[3]}
    assert "ReadTimeout" in episodes[questions[1]]["error"] and "HTTP 500" in episodes[questions[3]]["error"]
    assert episodes[questions[3]]["golden_answers"]  # the failed row still names its question's answers
    assert endpoint.requests.count(questions[3]) == 2  # the first try and one retry
    (row,) = json.loads(out.with_name("flaky.summary.json").read_text())["results"]
    assert (row["n"], row["failed"], row["em"]) == (6, 2, 0.0)


def test_a_dead_endpoint_stops_the_run_with_its_summary(small_world, tmp_path: Path, capsys) -> None:
    out = tmp_path / "dead.jsonl"
    args = _eval_args("http://127.0.0.1:9/v1", out, 8)
    code = main([*args, "--retries", "0", "--concurrency", "1", "--max-consecutive-failures", "3"])
    assert code == 1
    captured = capsys.readouterr()
    assert "failed episodes: 3" in captured.out
    assert "3 episodes failed in a row" in captured.err and "Traceback" not in captured.err
    summary = json.loads(out.with_name("dead.summary.json").read_text())
    assert summary["results"][0]["failed"] == 3 and "RunStopped" in summary["config"]["stopped"]


def test_ctrl_c_still_writes_the_table_and_summary(small_world, tmp_path: Path, sigint_reaches_children) -> None:
    endpoint = FlakyEndpoint(block_after=3)  # three episodes answered, then the endpoint hangs
    out = tmp_path / "interrupted.jsonl"
    with serving(endpoint.app, timeout_graceful_shutdown=1) as url:
        command = [sys.executable, "-m", "search_env.cli", *_eval_args(f"{url}/v1", out, 20), "--concurrency", "1"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ)
        try:
            deadline = time.monotonic() + 120
            while len(endpoint.requests) < 4:  # the fourth request hangs: episodes 1-3 are written
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
            stdout, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 130, stderr
    assert "world:small" in stdout and "summary:" in stdout and "Traceback" not in stderr
    summary = json.loads(out.with_name("interrupted.summary.json").read_text())
    assert summary["results"][0]["n"] == 3 and summary["config"]["stopped"] == "interrupted after 3 episodes"


def test_the_default_base_url_is_not_the_retrievers_port() -> None:
    assert DEFAULT_BASE_URL.split("://")[1].split("/")[0] != DEFAULT_RETRIEVER_URL.split("://")[1].split("/")[0]


@pytest.mark.parametrize("flag", ["--request-timeout=0", "--retries=-1", "--concurrency=0"])
def test_bad_limits_are_refused(flag: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--policy", "openai", "--model", "m", flag])
    assert exit_.value.code == 2 and flag.split("=")[0] in capsys.readouterr().err


def test_a_bad_qa_line_is_named_in_one_line_or_skipped(tmp_path: Path, capsys) -> None:
    qa = tmp_path / "mine.jsonl"
    good = [json.dumps({"id": str(i), "question": f"Who is q{i}?", "golden_answers": ["x"]}) for i in range(4)]
    qa.write_text("\n".join([*good[:2], '{"question": "no answer?"}', *good[2:]]) + "\n", encoding="utf-8")
    out = tmp_path / "qa.jsonl"
    args = [*_eval_args("http://127.0.0.1:9/v1", out, 10), "--data", str(qa)]
    args.remove("world:small")
    args.remove("--data")  # the first --data, world:small's
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"search-env eval: stopped: BadRecordError: {qa}:3: record has no gold answer" in err
    assert "Traceback" not in err
    endpoint = FlakyEndpoint()
    with serving(endpoint.app, timeout_graceful_shutdown=1) as url:
        args[args.index("http://127.0.0.1:9/v1")] = f"{url}/v1"
        assert main([*args, "--skip-bad-lines"]) == 0
    assert [e["em"] for e in read_jsonl(out)] == [1.0] * 4  # every good question played (gold "x")
