"""What polling `GET /info` costs the other clients of a retrieval server (issue 21: /info walked every
frozen object, 17-35 ms of the event loop each, and 8 pollers pushed another client's /retrieve p50 from
1.4 ms to 174 ms).

Starts two BM25 retrievers on an embedded world: A runs the code of `--old-rev` (a git worktree of it,
put first on PYTHONPATH), B the code of this checkout. Each round, on one server, `--pollers` processes
poll /info in a loop while one client sends single-query /retrieve requests one at a time for
`--seconds`; the servers alternate A, B, A, B... Prints per server the medians over rounds of the
client's /retrieve p50 and p99 (ms) and of the /info answers per second, with and without the pollers.

    python benchmarks/info_polling.py [--world small] [--rounds 3] [--pollers 8] [--seconds 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_env.qa_data import load_qa  # noqa: E402
from search_env.server_process import ServerProcess  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402

#: the last commit whose /info counted the frozen objects on every call
OLD_REV = "6f49054"


def poller(url: str, stop: Event, out: mp.Queue) -> None:
    n = 0
    with httpx.Client(timeout=30) as client:
        while not stop.is_set():
            client.get(url + "/info")
            n += 1
    out.put(n)


def retrieve_latencies(url: str, queries: list[str], seconds: float) -> list[float]:
    latencies = []
    with httpx.Client(timeout=30) as client:
        deadline = time.monotonic() + seconds
        i = 0
        while time.monotonic() < deadline:
            began = time.perf_counter()
            client.post(url + "/retrieve", json={"queries": [queries[i % len(queries)]], "topk": 3}).raise_for_status()
            latencies.append((time.perf_counter() - began) * 1000)
            i += 1
    return latencies


def one_round(url: str, queries: list[str], pollers: int, seconds: float) -> tuple[float, float, float]:
    """(p50 ms, p99 ms, /info answers per second) of one round."""
    stop, out = mp.Event(), mp.Queue()
    procs = [mp.Process(target=poller, args=(url, stop, out)) for _ in range(pollers)]
    for p in procs:
        p.start()
    time.sleep(0.5 if pollers else 0)
    latencies = retrieve_latencies(url, queries, seconds)
    stop.set()
    polls = sum(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join()
    latencies.sort()
    return statistics.median(latencies), latencies[int(0.99 * (len(latencies) - 1))], polls / (seconds + 0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--world", default="small")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pollers", type=int, default=8)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--old-rev", default=OLD_REV)
    args = p.parse_args(argv)
    world = ensure_world(args.world)
    queries = [r.question for r in load_qa(world.qa["test"])][:200]
    logs = Path(tempfile.mkdtemp(prefix="info-polling-"))
    old_tree = logs / "old"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old_tree), args.old_rev], check=True)
    cmd = ["retriever", "--backend", "bm25", "--world", args.world, "--cache-size", "0"]
    servers = {
        f"A {args.old_rev}": ServerProcess(cmd, logs / "a.log", env={"PYTHONPATH": str(old_tree)}),
        "B this checkout": ServerProcess(cmd, logs / "b.log", env={"PYTHONPATH": str(ROOT)}),
    }
    results: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
    try:
        for server in servers.values():
            server.start().wait_ready()
        for _ in range(args.rounds):
            for name, server in servers.items():  # A and B alternate within every round
                for pollers in (0, args.pollers):
                    results.setdefault((name, pollers), []).append(
                        one_round(server.url, queries, pollers, args.seconds)
                    )
    finally:
        for server in servers.values():
            server.stop()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old_tree)], check=False)
    table = Table(
        title=f"/retrieve latency while /info is polled (world {args.world}, medians of {args.rounds} rounds)"
    )
    for column in ("server", "pollers", "/retrieve p50 ms", "/retrieve p99 ms", "/info per s"):
        table.add_column(column)
    for (name, pollers), rows in results.items():
        p50, p99, polls = (statistics.median(r[i] for r in rows) for i in range(3))
        table.add_row(name, str(pollers), f"{p50:.1f}", f"{p99:.1f}", f"{polls:.0f}")
    Console().print(table)
    command = " ".join(["python benchmarks/info_polling.py", *(argv or sys.argv[1:])])
    print(f"cpus: {len(os.sched_getaffinity(0))}; command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
