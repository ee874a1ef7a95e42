"""Index builds that can be stopped cleanly: a BuildScope per loading thread holds the indexer subprocesses
it runs and a stop flag, so a server shutting down mid-build ends its Java indexer and lets the build
remove its partial folder, instead of exiting past them (a daemon thread dies without its `finally`).

Scopes are per thread, not per process: stopping one server's build in a process leaves others alone.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from search_env.corpus_validation import CorpusCheck, validate_corpus

_current = threading.local()


class BuildInterrupted(RuntimeError):
    """The build was stopped (server shutdown, SIGTERM/SIGINT) before it finished; nothing of it is kept."""


class BuildScope:
    """The subprocesses of the builds running under it, and whether they were told to stop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[str]] = set()
        self._stopped = threading.Event()

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    def stop(self) -> None:
        """Ask the builds to stop: their subprocesses get SIGTERM now, and the next check_stopped raises."""
        self._stopped.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()

    def check_stopped(self) -> None:
        """Raises BuildInterrupted once stop() was called."""
        if self.stopped:
            raise BuildInterrupted("the index build was interrupted (server shutting down)")

    def add(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._procs.add(proc)
        if self.stopped:  # stop() ran between the Popen and here
            proc.terminate()

    def discard(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._procs.discard(proc)


@contextlib.contextmanager
def build_scope(scope: BuildScope) -> Iterator[BuildScope]:
    """Run this thread's builds under `scope` (restoring the previous one after)."""
    previous = getattr(_current, "scope", None)
    _current.scope = scope
    try:
        yield scope
    finally:
        _current.scope = previous


def current_scope() -> BuildScope | None:
    """The scope of this thread's builds, if any (the CLI runs without one: signals interrupt it)."""
    return getattr(_current, "scope", None)


def stop_process(proc: subprocess.Popen[str], grace_s: float = 10.0) -> None:
    """End `proc` if it still runs: SIGTERM (the JVM runs its shutdown hooks), SIGKILL after `grace_s`."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def check_build_paths(
    corpus: str | Path, out_dir: str | Path, *, skip_bad_lines: bool
) -> tuple[Path, Path, CorpusCheck]:
    """(corpus, out_dir) made absolute and the corpus's validation, before a builder writes anything.

    Raises FileNotFoundError (no corpus), FileExistsError (`out_dir` holds files), BadRecordError (a bad
    corpus line, unless `skip_bad_lines`; see search_env.corpus_validation).
    """
    corpus, out_dir = Path(corpus).absolute(), Path(out_dir).absolute()
    if not corpus.is_file():
        raise FileNotFoundError(f"corpus not found: {corpus}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; choose another --out or remove it")
    return corpus, out_dir, validate_corpus(corpus, skip_bad_lines=skip_bad_lines)


def publish_build(built: Path, out_dir: Path, meta_file: str, meta: dict[str, Any]) -> None:
    """Write `meta` into `built` last, then rename `built` to `out_dir` (empty or absent, as checked by
    check_build_paths): an index folder with its metadata file is complete, one without is not."""
    (built / meta_file).write_text(json.dumps(meta, indent=1) + "\n")
    if out_dir.exists():
        out_dir.rmdir()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    built.rename(out_dir)
