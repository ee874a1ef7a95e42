"""A user's expected mistakes end in one line and exit code 2, never a traceback, and the mismatches
are detected and named: an unknown world, a retriever serving another world than the data's, a hybrid
retriever over two corpora. And the libraries' start-up chatter stays out of the servers' console."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from search_env.corpus_fingerprint import corpus_fingerprint
from search_env.home import searchgym_home
from search_env.server_process import free_port
from search_env.world.store import ensure_world

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, timeout=120, env=env)


def one_line(result: subprocess.CompletedProcess[str], prefix: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("command", "prefix"),
    [
        (["agent_server.cli", "retriever", "--world", "huge", "--port", "0"], "agent-server retriever: "),
        (["agent_server.cli", "env", "--worlds", "small,huge", "--port", "0"], "agent-server env: "),
        (["search_env.cli", "world", "--preset", "huge"], "search-env world: "),
        (["search_env.cli", "eval", "--policy", "scripted", "--data", "world:huge"], "search-env eval: "),
    ],
)
def test_an_unknown_world_is_one_line(command, prefix):
    line = one_line(run(*command), prefix)
    assert "huge" in line and "default" in line and "small" in line  # names it and what exists


def test_an_unknown_data_set_is_one_line():
    line = one_line(run("search_env.cli", "eval", "--policy", "scripted", "--data", "nq2"), "search-env eval: ")
    assert "unknown data set 'nq2'" in line


def test_the_retriever_reports_the_corpus_it_serves(bm25_server, small_world):
    corpora = httpx.get(bm25_server.url + "/info", timeout=10).json()["corpora"]
    assert [c["fingerprint"] for c in corpora] == [corpus_fingerprint(small_world.corpus, with_name=False)]


def test_a_retriever_serving_another_world_is_named(bm25_server, tmp_path, capsys):
    """The test retriever serves the small world; data of the tiny world cannot be answered from it. (The
    commands run in process: their one-line paths are what the subprocess tests above cover.)"""
    from search_env.cli import main as search_env_main
    from trainer.cli import main as trainer_main

    ensure_world("tiny")
    eval_args = ["eval", "--policy", "scripted", "--data", "world:tiny", "--retriever-url", bm25_server.url]
    train_args = ["train", "--data", "world:tiny", "--retriever-url", bm25_server.url, "--out-dir", str(tmp_path)]
    for main, args, prefix in (
        (search_env_main, [*eval_args, "--out", str(tmp_path / "eval.jsonl")], "search-env eval: "),
        (trainer_main, [*train_args, "--model", "embedded"], "search-trainer: "),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith(prefix)]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert "the data are world:tiny" in lines[0] and "serves world 'small'" in lines[0], lines[0]
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "eval.jsonl").exists()


def test_a_hybrid_over_two_corpora_is_refused_before_serving(dense_server, small_world):
    """The small world's dense index beside a BM25 side built from the tiny world's corpus."""
    index = httpx.get(dense_server.url + "/info", timeout=10).json()["backend"]["index"]
    tiny = ensure_world("tiny").corpus
    port = str(free_port())
    result = run(
        "agent_server.cli",
        "retriever",
        "--backend",
        "hybrid",
        "--dense-index",
        index,
        "--corpus",
        str(tiny),
        "--port",
        port,
    )
    line = one_line(result, "agent-server retriever: ")
    assert "a hybrid needs one corpus under both indexes" in line
    assert str(small_world.corpus) in line and str(tiny) in line


def test_library_start_up_messages_go_to_the_log_file_not_the_console(bm25_server):
    console = bm25_server.log_path.read_text()
    assert "log file (with the libraries' messages)" in console
    assert "lucene: " not in console and "MemorySegmentIndexInput" not in console
    logs = searchgym_home() / "logs"
    assert "retriever ready" in (logs / "agent-server-retriever.log").read_text()
    assert "MemorySegmentIndexInput" in (logs / "java.log").read_text()
