"""Retrieval server throughput and latency against a naive query-by-query baseline, in one run.

For each backend (BM25, dense, hybrid) on an embedded world it starts `agent-server retriever`
(result cache off, so every query is really searched) and the baseline server of
`naive_retrieval_server.py` over the same index, then measures on each, one after the other:
  - queries/s for batched requests of 1, 32 and 512 distinct queries (sequential requests);
  - p50/p99 latency and queries/s with 32 concurrent clients sending single-query requests.
It prints a table with the ratio ours/baseline. Indexes are built on first use (dense: minutes).

    python benchmarks/retrieval.py [--world default] [--backends bm25,dense,hybrid]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_server.server_process import ServerProcess  # noqa: E402
from search_env.qa_data import load_qa  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402

console = Console()
BASELINE = [sys.executable, str(ROOT / "benchmarks" / "naive_retrieval_server.py")]


def batched_qps(url: str, queries: list[str], batch: int, total: int) -> float:
    """Queries/s over sequential requests of `batch` queries each, `total` queries in all."""
    with httpx.Client(timeout=600) as client:
        client.post(url + "/retrieve", json={"queries": queries[:batch], "topk": 3}).raise_for_status()  # warm
        began = time.perf_counter()
        done = 0
        while done < total:
            chunk = queries[(done % len(queries)) : (done % len(queries)) + batch]
            r = client.post(url + "/retrieve", json={"queries": chunk, "topk": 3, "return_scores": True})
            r.raise_for_status()
            done += len(chunk)
        return done / (time.perf_counter() - began)


async def _concurrent(url: str, queries: list[str], clients: int, per_client: int) -> tuple[float, list[float]]:
    latencies: list[float] = []

    async def one_client(client: httpx.AsyncClient, offset: int) -> None:
        for i in range(per_client):
            q = queries[(offset * per_client + i) % len(queries)]
            began = time.perf_counter()
            r = await client.post("/retrieve", json={"query": q, "topk": 3, "return_scores": True})
            r.raise_for_status()
            latencies.append(time.perf_counter() - began)

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        began = time.perf_counter()
        await asyncio.gather(*(one_client(client, c) for c in range(clients)))
        elapsed = time.perf_counter() - began
    return len(latencies) / elapsed, latencies


def concurrent_load(url: str, queries: list[str], clients: int, per_client: int) -> dict[str, float]:
    qps, lat = asyncio.run(_concurrent(url, queries, clients, per_client))
    lat_ms = sorted(x * 1000 for x in lat)
    return {
        "qps": qps,
        "p50": statistics.median(lat_ms),
        "p99": lat_ms[min(len(lat_ms) - 1, int(0.99 * len(lat_ms)))],
    }


def measure(url: str, queries: list[str], loads: argparse.Namespace) -> dict[str, float]:
    out: dict[str, float] = {}
    for b in loads.batches:
        out[f"batch {b}"] = batched_qps(url, queries, b, max(b * loads.rounds, loads.min_queries))
    conc = concurrent_load(url, queries, loads.clients, loads.per_client)
    out.update({f"{loads.clients} clients": conc["qps"], "p50": conc["p50"], "p99": conc["p99"]})
    return out


def main() -> None:
    p = argparse.ArgumentParser(description="retrieval server vs naive baseline")
    p.add_argument("--world", default="default")
    p.add_argument("--backends", default="bm25,dense,hybrid")
    p.add_argument("--batches", default="1,32,512")
    p.add_argument("--rounds", type=int, default=4, help="requests per batch size (at least min-queries)")
    p.add_argument("--min-queries", type=int, default=256)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--per-client", type=int, default=16)
    p.add_argument("--log-dir", type=Path, default=Path("runs/bench-retrieval"))
    args = p.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    args.log_dir.mkdir(parents=True, exist_ok=True)

    world = ensure_world(args.world)
    queries = list(dict.fromkeys(r.question for r in load_qa(world.qa["train"])))
    console.print(f"world {args.world}: {sum(1 for _ in world.corpus.open())} passages, {len(queries)} queries")

    table = Table(title=f"retrieval on world '{args.world}' (queries/s; latency ms; ours / naive baseline)")
    for col in ["backend", "load", "ours", "baseline", "ratio"]:
        table.add_column(col, justify="right" if col not in ("backend", "load") else "left")
    for backend in args.backends.split(","):
        results = {}
        for name, server_args, command in [
            ("ours", ["retriever", "--backend", backend, "--world", args.world, "--cache-size", "0"], None),
            ("baseline", ["--backend", backend, "--world", args.world], BASELINE),
        ]:
            console.print(f"[bold]{backend}[/]: starting {name} server (builds indexes on first use)...")
            server = ServerProcess(server_args, args.log_dir / f"{backend}-{name}.log", command=command).start()
            try:
                server.wait_ready(timeout=3600)
                results[name] = measure(server.url, queries, args)
            finally:
                server.stop()
            console.print(f"  {name}: " + ", ".join(f"{k} {v:.1f}" for k, v in results[name].items()))
        for key in results["ours"]:
            ours, base = results["ours"][key], results["baseline"][key]
            latency = key in ("p50", "p99")
            ratio = base / ours if latency else ours / base  # >1 means ours is better either way
            label = f"{key} latency, {args.clients} clients" if latency else f"{key} (q/s)"
            table.add_row(backend, label, f"{ours:.1f}", f"{base:.1f}", f"{ratio:.2f}x")
        table.add_section()
    console.print(table)


if __name__ == "__main__":
    main()
