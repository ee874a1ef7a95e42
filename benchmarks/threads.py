"""Dense query encoding (the packaged all-MiniLM-L6-v2, CPU) with 1, 2... torch threads: milliseconds
per single query and per batch of 32, each thread count in a fresh process (OpenMP is set once).

    python benchmarks/threads.py [--threads 1 2] [--rounds 2]

Rounds alternate the thread counts, so a machine whose load changes meanwhile shows it in both.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def measure(threads: int) -> dict[str, float]:
    """In this process: apply `threads`, then time 64 single-query and 8 batch-of-32 encodings."""
    from search_env.threads import apply_threads

    apply_threads(threads, default=threads, load_torch=True)
    from agent_server.encoder import load_encoder
    from search_env.qa_data import load_qa
    from search_env.world.store import ensure_world

    questions = [r.question for r in load_qa(ensure_world("small").qa["train"])][:256]
    encoder = load_encoder(None, "cpu")
    encoder.encode_queries(questions[:4])  # warm
    started = time.perf_counter()
    for question in questions[:64]:
        encoder.encode_queries([question])
    single = (time.perf_counter() - started) / 64
    started = time.perf_counter()
    for i in range(0, 256, 32):
        encoder.encode_queries(questions[i : i + 32])
    batch = (time.perf_counter() - started) / 8
    return {"threads": threads, "single_ms": round(single * 1000, 1), "batch32_ms": round(batch * 1000, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)  # a child: measure this count, print JSON
    args = p.parse_args()
    if args.one is not None:
        print(json.dumps(measure(args.one)))
        return 0
    for round_ in range(args.rounds):
        for n in args.threads:
            command = [sys.executable, __file__, "--one", str(n)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"round {round_ + 1}: threads={n}: single query {row['single_ms']} ms, batch of 32 "
                  f"{row['batch32_ms']} ms", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
