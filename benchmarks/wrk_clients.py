"""Concurrent single-query HTTP clients driven by wrk (https://github.com/wg/wrk, a C load generator from the
system's packages: `apt-get install wrk`), so the load generator costs the machine far less CPU per query
than Python clients do (on a 2-core machine those competed with the servers for the cores).

wrk runs `WRK_SCRIPT` (written to a temp dir beside the request bodies): each wrk thread reads its own
bodies file, pre-formats one POST per body in `init` (wrk's advice for fast servers), and cycles them; the
bodies are dealt to the threads round-robin (`deal`), so a thread's connections send consecutive bodies of
its own share and no two connections send the same body at once unless a share is shorter than a thread's
connections (a server that folds duplicates in a batch would otherwise be flattered). `done` prints the
summary and latency percentiles as one JSON line, which `run` parses.
"""

from __future__ import annotations

import functools
import json
import re
import resource
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

MARKER = "wrk-result "
WRK_SCRIPT = r"""
-- One POST per request, cycling this thread's bodies (one JSON body a line in <dir>/bodies-<id>.txt).
local counter = 0
setup = function(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local requests, i = {}, 0
init = function(args)
  local headers = {["Content-Type"] = "application/json"}
  for line in io.lines(args[1] .. "/bodies-" .. id .. ".txt") do
    requests[#requests + 1] = wrk.format("POST", args[2], headers, line)
  end
  if #requests == 0 then error("no request bodies for thread " .. id) end
end

request = function()
  i = i % #requests + 1
  return requests[i]
end

done = function(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "status_errors": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "p50_us": %d, "p99_us": %d}\n',
    "@MARKER@", summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
""".replace("@MARKER@", MARKER)


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: `requests` completed in `duration_s` (wrk's own clock), latency percentiles in ms,
    error counts as wrk reports them, and wrk's CPU time (user + system) in seconds."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    status_errors: int  # responses with status > 399 (wrk counts no other non-2xx)
    socket_errors: dict[str, int]  # connect, read, write, timeouts
    cpu_s: float


@functools.cache
def version(wrk: str = "wrk") -> str | None:
    """wrk's version ("4.1.0") or None when wrk is not on PATH."""
    path = shutil.which(wrk)
    if path is None:
        return None
    # `wrk -v` prints "wrk debian/4.1.0-3+b2 [epoll] ..." and the usage, and exits 1.
    out = subprocess.run([path, "-v"], capture_output=True, text=True, check=False).stdout
    found = re.search(r"(\d+\.\d+(?:\.\d+)?)", out.splitlines()[0] if out else "")
    return found.group(1) if found else "unknown version"


def deal(bodies: list[str], threads: int) -> list[list[str]]:
    """The bodies of each wrk thread: body k goes to thread k % threads, in order.

    Raises ValueError when a thread would get none, or a body holds a line break (the file holds one a line).
    """
    if len(bodies) < threads:
        raise ValueError(f"{len(bodies)} bodies for {threads} wrk threads: each thread needs at least one")
    if any("\n" in b or "\r" in b for b in bodies):
        raise ValueError("a request body holds a line break; wrk's script reads one body a line")
    return [bodies[t::threads] for t in range(threads)]


def write_inputs(bodies: list[str], threads: int, directory: Path) -> Path:
    """Write `WRK_SCRIPT` and each thread's bodies file (`deal`) into `directory`; return the script's path."""
    for t, share in enumerate(deal(bodies, threads)):
        (directory / f"bodies-{t}.txt").write_text("".join(b + "\n" for b in share))
    script = directory / "post.lua"
    script.write_text(WRK_SCRIPT)
    return script


def run(
    url: str,
    path: str,
    bodies: list[str],
    *,
    connections: int,
    threads: int,
    seconds: int,
    timeout_s: int = 30,
    wrk: str = "wrk",
) -> WrkResult:
    """POST `bodies` (JSON strings, cycled) to `path` on `url` ("http://host:port") from `connections`
    keep-alive connections on `threads` wrk threads for `seconds` (wrk takes whole seconds); a request
    slower than `timeout_s` counts as an error. Returns wrk's figures and its CPU time.

    Raises ValueError when `connections` is not a multiple of `threads` (wrk gives each thread
    connections // threads) and RuntimeError when wrk fails or reports any error response or socket
    error (as the Python clients raise on a non-200), with wrk's output.
    """
    if threads < 1 or connections % threads:
        raise ValueError(f"{connections} connections is not a multiple of {threads} wrk threads")
    with tempfile.TemporaryDirectory(prefix="wrk-") as tmp:
        script = write_inputs(bodies, threads, Path(tmp))
        cmd = [
            wrk,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={seconds}s",
            f"--timeout={timeout_s}s",
            f"--script={script}",
            url,
            "--",
            tmp,
            path,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=seconds + timeout_s + 60)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped in between
    output = done.stdout + done.stderr
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARKER)]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed (exit {done.returncode}): {' '.join(cmd)}\n{output}")
    r = json.loads(lines[-1][len(MARKER) :])
    socket_errors = {k: r[f"{k}_errors"] for k in ("connect", "read", "write")} | {"timeouts": r["timeouts"]}
    if r["status_errors"] or any(socket_errors.values()) or not r["requests"]:
        raise RuntimeError(
            f"wrk: {r['requests']} requests, {r['status_errors']} with status > 399, socket errors "
            f"{socket_errors}: {' '.join(cmd)}\n{output}"
        )
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return WrkResult(
        requests=r["requests"],
        duration_s=r["duration_us"] / 1e6,
        p50_ms=r["p50_us"] / 1000,
        p99_ms=r["p99_us"] / 1000,
        status_errors=r["status_errors"],
        socket_errors=socket_errors,
        cpu_s=cpu,
    )
