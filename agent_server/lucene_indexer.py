"""pyserini's Lucene indexer under our Java setup, run in a subprocess that never outlives its build.

`python -m agent_server.lucene_indexer ARGS` takes the arguments of `python -m pyserini.index.lucene`;
it runs in a subprocess so that the JVM it starts gets configure_java()'s JAVA_HOME and options, and so
indexing memory is freed when it exits. `run_indexer` (the parent's side) ends that subprocess whenever
the build does not finish: an exception, SIGINT/SIGTERM turned into one, or its BuildScope stopped; and
the child asks the kernel to kill it if its parent dies first (SIGKILL leaves no `finally` to run).
"""

from __future__ import annotations

import collections
import ctypes
import logging
import os
import re
import runpy
import signal
import subprocess
import sys
from pathlib import Path

from agent_server.index_builds import current_scope, stop_process
from agent_server.java_runtime import configure_java

logger = logging.getLogger(__name__)

_PARENT_ENV = "SEARCHGYM_INDEXER_PARENT"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the thread that started it dies (no-op elsewhere)."""
    parent = os.environ.get(_PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):  # the parent died before prctl: nobody would kill us
        os._exit(1)


def main(argv: list[str] | None = None) -> None:
    _die_with_parent()
    configure_java()
    sys.argv = ["pyserini.index.lucene", *(sys.argv[1:] if argv is None else argv)]
    runpy.run_module("pyserini.index.lucene", run_name="__main__", alter_sys=True)


def indexer_env() -> dict[str, str]:
    """The child's environment: it must import agent_server even when searchgym runs from a source checkout."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env[_PARENT_ENV] = str(os.getpid())
    return env


def run_indexer(args: list[str]) -> dict[str, int]:
    """Run the indexer with pyserini's `args`, streaming its output to the log; its final counters
    (indexed, skipped, errors...).

    Raises RuntimeError if it fails, BuildInterrupted if this thread's BuildScope stopped it; on any
    exception (KeyboardInterrupt included) the subprocess is ended before this returns.
    """
    command = [sys.executable, "-m", "agent_server.lucene_indexer", *args]
    counters: dict[str, int] = {}
    tail: collections.deque[str] = collections.deque(maxlen=40)
    scope = current_scope()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=indexer_env())
    if scope is not None:
        scope.add(proc)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail.append(line)
            logger.info("lucene: %s", line)
            match = re.search(r" - (indexed|unindexable|empty|skipped|errors):\s+([\d,]+)$", line)
            if match:
                counters[match.group(1)] = int(match.group(2).replace(",", ""))
        proc.wait()
    finally:
        stop_process(proc)
        if proc.stdout is not None:
            proc.stdout.close()
        if scope is not None:
            scope.discard(proc)
    if scope is not None:
        scope.check_stopped()
    if proc.returncode != 0:
        raise RuntimeError(f"Lucene indexer failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return counters


if __name__ == "__main__":
    main()
