"""Env steps per second, in process and through the env server, with retrieval excluded (actions that
do not search) and included (every action searches). Then the scripted baseline's EM on the test split.

    python benchmarks/env.py [--world default] [--sizes 16 64] [--repeats 5] [--min-seconds 1]

Cells, for each number of sessions (sub-envs) and kind of action:
- remote, vector env: RemoteSearchVectorEnv (`gymnasium.make_vec("searchgym/RemoteSearchQA-v0")`), one
  `POST /sessions/step` for all sessions per step;
- remote, one request per session: RemoteSearchEnvs stepped one after the other;
- remote, concurrent asyncio clients: one `POST /sessions/{id}/step` per session, all in flight at once
  (asyncio.gather over one async client, the project's JsonHttpClient);
- in process, vector env: SearchQAVectorEnv (one `/retrieve` per step), against in-process envs stepped
  one by one.
Each cell is timed `--repeats` times; the cells run in alternating order (rotated every repetition,
so drift in the machine's load falls on all of them alike), each timing a warm-up round then timed
rounds of one step per session, at least `--rounds` of them and for at least `--min-seconds`; the
table gives the median steps/s and the range of the repetitions. Episodes never end (max_turns
10**6), so every step is a step. The retriever runs with its result cache off so that every search
is really searched.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import search_env  # noqa: E402,F401 - registers the ids
from search_env.env_schema import StepRequest  # noqa: E402
from search_env.evaluation.benchmark import run_benchmark  # noqa: E402
from search_env.evaluation.datasets import parse_data_specs  # noqa: E402
from search_env.evaluation.scripted import ScriptedPolicy  # noqa: E402
from search_env.evaluation.table import render_table  # noqa: E402
from search_env.qa_data import load_qa  # noqa: E402
from search_env.remote_env import RemoteSearchEnv, env_server_client, new_request_id  # noqa: E402
from search_env.server_process import ServerProcess  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402

console = Console(width=150)  # a saved run keeps its table rows whole
NO_SEARCH = "<think>thinking, no tags to act on</think>"  # an invalid action: the env answers at once
KINDS = ("no search", "search")
CELLS = (
    "remote: vector env (1 request/step)",
    "remote: 1 request per session",
    "remote: concurrent asyncio clients",
    "in process: vector env",
    "in process: one by one",
)


def timed_sync(step_all: Callable[[int], object], rounds: int, min_s: float) -> tuple[int, float]:
    """(rounds, seconds) of at least `rounds` rounds and `min_s` seconds, after one untimed warm-up round."""
    step_all(0)
    began = time.perf_counter()
    done = 0
    while done < rounds or time.perf_counter() - began < min_s:
        done += 1
        step_all(done)
    return done, time.perf_counter() - began


def timed_async(
    envs: list[RemoteSearchEnv], url: str, actions: Callable[[int], list[str]], rounds: int, min_s: float
) -> tuple[int, float]:
    """`timed_sync` for concurrent asyncio clients: one request per session, all in flight at once."""
    http = env_server_client(url)

    async def step_round(r: int) -> None:
        bodies = [StepRequest(action=a, request_id=new_request_id()).model_dump() for a in actions(r)]
        paths = [f"/sessions/{e.session_id}/step" for e in envs]
        await asyncio.gather(*(http.arequest("POST", path, json=b) for path, b in zip(paths, bodies, strict=True)))

    async def run() -> tuple[int, float]:
        try:
            await step_round(0)  # warm-up: opens the connections
            began = time.perf_counter()
            done = 0
            while done < rounds or time.perf_counter() - began < min_s:
                done += 1
                await step_round(done)
            return done, time.perf_counter() - began
        finally:
            await http.aclose()

    return asyncio.run(run())


def main() -> None:
    p = argparse.ArgumentParser(description="env throughput, in process and over HTTP")
    p.add_argument("--world", default="default")
    p.add_argument("--sizes", type=int, nargs="+", default=[16, 64], help="sessions (sub-envs) per cell")
    p.add_argument("--repeats", type=int, default=5, help="timings per cell (the median is reported)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds of one step per session, per timing (at least)")
    p.add_argument("--min-seconds", type=float, default=1.0, help="and rounds until this long, per timing")
    p.add_argument("--eval-limit", type=int, default=0, help="test questions for the scripted EM (0: all)")
    p.add_argument("--log-dir", type=Path, default=Path("runs/bench-env"))
    args = p.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)
    world = ensure_world(args.world)
    questions = [r.question for r in load_qa(world.qa["train"])]
    data = {"data": f"world:{args.world}", "split": "test", "max_turns": 10**6}

    retr_args = ["retriever", "--backend", "bm25", "--world", args.world, "--cache-size", "0"]
    retriever = ServerProcess(retr_args, args.log_dir / "retriever.log").start()
    env_srv = None
    rates: dict[tuple[int, str, str], list[float]] = {}
    try:
        retriever.wait_ready(timeout=3600)
        env_srv = ServerProcess(["env", "--retriever-url", retriever.url], args.log_dir / "env.log").start()
        env_srv.wait_ready(timeout=300)
        url = env_srv.url
        for n in args.sizes:
            measure(n, url, retriever.url, data, questions, args, rates)
        print_table(rates, args)
        scripted_em(retriever.url, args)
    finally:
        if env_srv is not None:
            env_srv.stop()
        retriever.stop()


def measure(
    n: int,
    url: str,
    retriever_url: str,
    data: dict[str, Any],
    questions: list[str],
    args: argparse.Namespace,
    rates: dict[tuple[int, str, str], list[float]],
) -> None:
    """Every cell for `n` sessions, both kinds of action; steps/s of each timing appended to `rates`."""

    def actions(kind: str, r: int) -> list[str]:
        if kind == "no search":
            return [NO_SEARCH] * n
        return [f"<search> {questions[(r * n + i) % len(questions)]} </search>" for i in range(n)]

    vector = gymnasium.make_vec("searchgym/RemoteSearchQA-v0", num_envs=n, server_url=url, **data)
    singles = [RemoteSearchEnv(url, **data) for _ in range(n)]
    concurrent = [RemoteSearchEnv(url, **data) for _ in range(n)]
    local_vector = gymnasium.make_vec("searchgym/SearchQA-v0", num_envs=n, retriever_url=retriever_url, **data)
    local = [gymnasium.make("searchgym/SearchQA-v0", retriever_url=retriever_url, **data) for _ in range(n)]
    vector.reset(seed=0)
    local_vector.reset(seed=0)
    for i, env in enumerate(singles + concurrent + local):
        env.reset(options={"index": i % n})

    def one_by_one(envs: list[Any], kind: str) -> tuple[int, float]:
        step = lambda r: [e.step(a) for e, a in zip(envs, actions(kind, r), strict=True)]  # noqa: E731
        return timed_sync(step, args.rounds, args.min_seconds)

    def batched(envs: Any, kind: str) -> tuple[int, float]:
        return timed_sync(lambda r: envs.step(tuple(actions(kind, r))), args.rounds, args.min_seconds)

    run: dict[str, Callable[[str], tuple[int, float]]] = {
        CELLS[0]: lambda kind: batched(vector, kind),
        CELLS[1]: lambda kind: one_by_one(singles, kind),
        CELLS[2]: lambda kind: timed_async(concurrent, url, lambda r: actions(kind, r), args.rounds, args.min_seconds),
        CELLS[3]: lambda kind: batched(local_vector, kind),
        CELLS[4]: lambda kind: one_by_one(local, kind),
    }
    try:
        for kind in KINDS:
            for rep in range(args.repeats):
                order = CELLS[rep % len(CELLS) :] + CELLS[: rep % len(CELLS)]
                for cell in order:
                    rounds, seconds = run[cell](kind)
                    rates.setdefault((n, kind, cell), []).append(n * rounds / seconds)
            for cell in CELLS:
                got = rates[n, kind, cell]
                console.print(f"{n} sessions, {kind}, {cell}: " + " ".join(f"{x:.0f}" for x in got))
    finally:
        for env in [vector, local_vector, *singles, *concurrent, *local]:
            env.close()


def print_table(rates: dict[tuple[int, str, str], list[float]], args: argparse.Namespace) -> None:
    table = Table(
        title=f"env steps/s, world '{args.world}' (BM25, cache off): median of {args.repeats} alternating timings "
        f"of >= {args.min_seconds:g} s [min-max]"
    )
    for col in ("sessions", "actions", "cell", "steps/s", "vs 1 request per session"):
        table.add_column(col)
    for n in args.sizes:
        for kind in KINDS:
            baseline = statistics.median(rates[n, kind, CELLS[1]])
            for cell in CELLS:
                got = rates[n, kind, cell]
                median = statistics.median(got)
                ratio = f"{median / baseline:.2f}x" if cell.startswith("remote") else ""
                table.add_row(str(n), kind, cell, f"{median:,.0f} [{min(got):,.0f}-{max(got):,.0f}]", ratio)
    console.print(table)


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
