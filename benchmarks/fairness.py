"""Fairness of the retrieval server: single-query latency while one large request is searched.

Starts two BM25 retrievers on an embedded world (result cache off, so every query is searched): one
with chunking off (`--max-chunk-queries 0`: a request is searched whole) and one with it on. Each
round, on one server, N single-query clients (separate processes, one request at a time, 5 s client
timeout) loop while one large request (4,096 distinct queries) is in flight; the arms alternate
A, B, A, B... Prints, per arm, the medians over rounds of the single-query p50/p99 latency and
failures (timeouts included; a failed request counts in the latencies at the time the client gave
up), and of the large request's total time.

    python benchmarks/fairness.py [--world default] [--chunks 0,256] [--rounds 3] [--clients 4]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
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

console = Console()


def single_client(url: str, queries: list[str], offset: int, timeout: float, stop: Event, out: mp.Queue) -> None:
    """Loop single-query requests until `stop` (at most 10 minutes); put (latencies, failures) on `out`.
    A failed request counts in the latencies too, at the time the client gave up on it."""
    latencies: list[float] = []
    failures = 0
    give_up = time.monotonic() + 600
    with httpx.Client(base_url=url, timeout=timeout) as client:
        i = offset
        while not stop.is_set() and time.monotonic() < give_up:
            began = time.perf_counter()
            try:
                client.post("/retrieve", json={"query": queries[i % len(queries)], "topk": 3}).raise_for_status()
            except httpx.HTTPError:  # a timeout is a failure: the client gave up on it
                failures += 1
            latencies.append(time.perf_counter() - began)
            i += 7
    out.put((latencies, failures))


def one_round(url: str, large: list[str], singles: list[str], args: argparse.Namespace) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    clients = [
        ctx.Process(target=single_client, args=(url, singles, c * 1000, args.timeout, stop, out))
        for c in range(args.clients)
    ]
    for p in clients:
        p.start()
    time.sleep(args.settle)  # clients started and looping before the large request goes in
    began = time.perf_counter()
    with httpx.Client(timeout=600) as client:
        client.post(url + "/retrieve", json={"queries": large, "topk": args.topk}).raise_for_status()
    large_s = time.perf_counter() - began
    stop.set()
    results = [out.get(timeout=660) for _ in clients]
    for p in clients:
        p.join(timeout=30)
    lat_ms = sorted(x * 1000 for lats, _ in results for x in lats)
    return {
        "p50": statistics.median(lat_ms) if lat_ms else float("nan"),
        "p99": lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))] if lat_ms else float("nan"),
        "max": lat_ms[-1] if lat_ms else float("nan"),
        "requests": len(lat_ms),
        "failed": sum(f for _, f in results),
        "large_s": large_s,
    }


def main() -> None:
    p = argparse.ArgumentParser(description="single-query latency while a large request is searched")
    p.add_argument("--world", default="default")
    p.add_argument("--chunks", default="0,256", help="--max-chunk-queries of each arm (0: chunking off)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per arm (arms alternate)")
    p.add_argument("--clients", type=int, default=4, help="single-query client processes")
    p.add_argument("--large", type=int, default=4096, help="queries in the large request")
    p.add_argument("--topk", type=int, default=3, help="top-k of the large request")
    p.add_argument("--timeout", type=float, default=5.0, help="single-query client timeout (s)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds the clients run before the large request")
    p.add_argument("--log-dir", type=Path, default=Path("runs/bench-fairness"))
    args = p.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    chunks = [int(c) for c in args.chunks.split(",")]

    world = ensure_world(args.world)
    questions = list(dict.fromkeys(r.question for r in load_qa(world.qa["train"])))
    # Distinct queries (the server searches a repeated one once), none of them a single client's.
    large = [f"{questions[i % len(questions)]} {i}" for i in range(args.large)]
    singles = [f"{q} single" for q in questions]

    servers: dict[int, ServerProcess] = {}
    rows: dict[int, list[dict[str, float]]] = {c: [] for c in chunks}
    try:
        for c in chunks:
            server_args = ["retriever", "--backend", "bm25", "--world", args.world, "--cache-size", "0"]
            log = args.log_dir / f"bm25-chunk{c}.log"
            servers[c] = ServerProcess([*server_args, "--max-chunk-queries", str(c)], log).start()
        for server in servers.values():
            server.wait_ready(timeout=1800)
            httpx.post(server.url + "/retrieve", json={"queries": large[:256], "topk": args.topk}, timeout=600)  # warm
        for r in range(args.rounds):
            for c in chunks:  # A, B, A, B...
                rows[c].append(one_round(servers[c].url, large, singles, args))
                figures = ", ".join(f"{k} {v:.1f}" for k, v in rows[c][-1].items())
                console.print(f"round {r + 1}, chunk {c or 'off'}: {figures}")
    finally:
        for server in servers.values():
            server.stop()

    title = (
        f"BM25 on world '{args.world}': {args.clients} single-query clients (processes, {args.timeout:g} s timeout) "
        f"while one {args.large}-query request (top-{args.topk}) is searched; medians of {args.rounds} rounds"
    )
    table = Table(title=title)
    cols = ["--max-chunk-queries", "single p50 (ms)", "p99 (ms)", "max (ms)", "requests", "failed", "large request (s)"]
    for col in cols:
        table.add_column(col, justify="right")
    for c in chunks:
        med = {k: statistics.median(row[k] for row in rows[c]) for k in rows[c][0]}
        table.add_row(
            str(c) if c else "off (whole)",
            f"{med['p50']:.0f}",
            f"{med['p99']:.0f}",
            f"{med['max']:.0f}",
            f"{med['requests']:.0f}",
            f"{med['failed']:.0f}",
            f"{med['large_s']:.2f}",
        )
    console.print(table)


if __name__ == "__main__":
    main()
