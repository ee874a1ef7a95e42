"""Every long-running process sets its CPU threads deliberately (issue 14.5): the helper sets torch's
and OpenMP's counts; a real retriever process started with `--threads` logs what it chose and
reports it in /info; the dense retriever runs its torch and faiss with the server default."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from search_env.server_process import ServerProcess
from search_env.threads import THREAD_ENV_VARS, apply_threads, current_threads, trainer_default


@pytest.fixture
def restore_threads() -> Iterator[None]:
    import torch

    before = torch.get_num_threads(), {v: os.environ.get(v) for v in THREAD_ENV_VARS}
    yield
    torch.set_num_threads(before[0])
    for var, value in before[1].items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


def test_the_helper_sets_torch_and_openmp(restore_threads, caplog: pytest.LogCaptureFixture) -> None:
    import torch

    caplog.set_level("INFO", logger="searchgym.threads")
    target = 1 if torch.get_num_threads() != 1 else 2
    settings = apply_threads(target, default=5, load_torch=True)
    assert torch.get_num_threads() == target and settings.threads == target and settings.torch_loaded
    assert all(os.environ[v] == str(target) for v in THREAD_ENV_VARS)
    assert current_threads()["torch_intra_op"] == target
    assert f"threads: torch intra={target}" in caplog.text and "from --threads" in caplog.text
    assert apply_threads(None, default=1).source.startswith("default 1") and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="--threads must be at least 1"):
        apply_threads(0, default=1)
    assert 1 <= trainer_default() <= max(1, os.cpu_count() or 1)


def test_a_retriever_started_with_threads_logs_and_reports_them(small_world, tmp_path: Path) -> None:
    log = tmp_path / "retriever.log"
    server = ServerProcess(["retriever", "--backend", "bm25", "--world", "small", "--threads", "3",
                            "--search-threads", "4"], log).start()
    try:
        server.wait_ready()
        info = httpx.get(server.url + "/info", timeout=10).json()
    finally:
        server.stop()
    assert info["threads"]["omp_num_threads"] == "3"
    assert info["backend"]["threads"] == 4  # pyserini's batch_search threads: their own flag
    assert "threads: torch intra=3 (when loaded), faiss/OpenMP=3 (from --threads" in log.read_text()


def test_the_dense_retriever_runs_the_server_default(dense_server) -> None:
    threads = httpx.get(dense_server.url + "/info", timeout=10).json()["threads"]
    assert (threads["torch_intra_op"], threads["faiss_omp"], threads["omp_num_threads"]) == (1, 1, "1")
    assert "threads: torch intra=1 (when loaded), faiss/OpenMP=1 (default 1" in dense_server.log_path.read_text()
