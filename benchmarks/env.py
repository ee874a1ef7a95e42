"""Env steps per second: in process and through the env server, single and batched, with retrieval
excluded (actions that do not search) and included (every action searches), against the baseline of
one HTTP request per sub-env, in the same run. Then the scripted baseline's EM on the test split.

    python benchmarks/env.py [--world default] [--envs 16] [--steps 20]

The retriever runs with its result cache off so that every search is really searched.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_server.server_process import ServerProcess  # noqa: E402
from search_env.evaluation.benchmark import run_benchmark  # noqa: E402
from search_env.evaluation.datasets import parse_data_specs  # noqa: E402
from search_env.evaluation.scripted import ScriptedPolicy  # noqa: E402
from search_env.evaluation.table import render_table  # noqa: E402
from search_env.qa_data import load_qa  # noqa: E402
from search_env.remote_env import RemoteSearchEnv  # noqa: E402
from search_env.search_qa_env import SearchQAEnv, batched_step  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402

console = Console()
NO_SEARCH = "<think>thinking, no tags to act on</think>"  # an invalid action: the env answers at once


def steps_per_second(step_all: Callable[[int], None], n_envs: int, rounds: int) -> float:
    step_all(0)  # warm up
    began = time.perf_counter()
    for r in range(1, rounds + 1):
        step_all(r)
    return n_envs * rounds / (time.perf_counter() - began)


def main() -> None:
    p = argparse.ArgumentParser(description="env throughput, in process and over HTTP")
    p.add_argument("--world", default="default")
    p.add_argument("--envs", type=int, default=16)
    p.add_argument("--steps", type=int, default=20, help="rounds of one step per sub-env")
    p.add_argument("--eval-limit", type=int, default=0, help="test questions for the scripted EM (0: all)")
    p.add_argument("--log-dir", type=Path, default=Path("runs/bench-env"))
    args = p.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    world = ensure_world(args.world)
    questions = [r.question for r in load_qa(world.qa["train"])]
    data = {"data": f"world:{args.world}", "split": "test"}
    n = args.envs

    def action(kind: str, r: int, i: int) -> str:
        return NO_SEARCH if kind == "no search" else f"<search> {questions[(r * n + i) % len(questions)]} </search>"

    retr_args = ["retriever", "--backend", "bm25", "--world", args.world, "--cache-size", "0"]
    retriever = ServerProcess(retr_args, args.log_dir / "retriever.log").start()
    env_srv = None
    rows: list[tuple[str, str, float, float]] = []
    try:
        retriever.wait_ready(timeout=3600)
        env_srv = ServerProcess(["env", "--retriever-url", retriever.url], args.log_dir / "env.log").start()
        env_srv.wait_ready(timeout=300)

        local = [SearchQAEnv(**data, retriever_url=retriever.url, max_turns=10**6) for _ in range(n)]
        remote = [RemoteSearchEnv(env_srv.url, **data, max_turns=10**6) for _ in range(n)]
        for i, e in enumerate(local + remote):
            e.reset(options={"index": i % n})
        http = httpx.Client(timeout=300)

        for kind in ("no search", "search"):
            one_by_one = steps_per_second(
                lambda r, k=kind: [e.step(action(k, r, i)) for i, e in enumerate(local)], n, args.steps
            )
            batched = steps_per_second(
                lambda r, k=kind: batched_step(local, [action(k, r, i) for i in range(n)]), n, args.steps
            )
            rows.append(("in process", kind, batched, one_by_one))
            single = steps_per_second(
                lambda r, k=kind: [e.step(action(k, r, i)) for i, e in enumerate(remote)], n, args.steps
            )

            def batch_http(r: int, k: str = kind) -> None:
                steps = [{"session_id": e.session_id, "action": action(k, r, i)} for i, e in enumerate(remote)]
                http.post(env_srv.url + "/sessions/step", json={"steps": steps}).raise_for_status()

            batched_server = steps_per_second(batch_http, n, args.steps)
            rows.append(("env server", kind, batched_server, single))
            console.print(f"{kind}: local {batched:.0f}/{one_by_one:.0f}, server {batched_server:.0f}/{single:.0f}")
        for e in local + remote:
            e.close()

        table = Table(title=f"env steps/s, {n} sub-envs, world '{args.world}' (BM25, cache off)")
        for col in ("where", "actions", "batched (1 request/step)", "one request per sub-env", "ratio"):
            table.add_column(col)
        for where, kind, batched, single in rows:
            table.add_row(where, kind, f"{batched:.0f}", f"{single:.0f}", f"{batched / single:.2f}x")
        console.print(table)
        scripted_em(retriever.url, args)
    finally:
        if env_srv is not None:
            env_srv.stop()
        retriever.stop()


def scripted_em(retriever_url: str, args: argparse.Namespace) -> None:
    """The scripted reference policies on the test split, through the benchmark harness."""
    sets = parse_data_specs([f"world:{args.world}", f"world:{args.world}:single", f"world:{args.world}:multi"], "test")
    for policy in (ScriptedPolicy(answer="title"), ScriptedPolicy(answer="entity")):
        result = asyncio.run(
            run_benchmark(policy, sets, retriever_url=retriever_url, concurrency=8, limit=args.eval_limit or None)
        )
        console.print(render_table(result.metrics, title=f"scripted baseline '{policy.name}' (BM25, top-3)"))


if __name__ == "__main__":
    main()
