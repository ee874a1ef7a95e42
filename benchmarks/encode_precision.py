"""Dense query encoding precision (issue 13 part 2): speed of fp32 against bf16-mixed at each encoder
batch size, and whether the dense backend's results stay the same.

  speed: the packaged all-MiniLM-L6-v2 on CPU at `--threads` torch threads, encoding `--queries` train
         questions of the small world in one call at each `--batch-sizes` (queries per forward pass;
         sentence-transformers sorts them by length and pads each sub-batch to its longest), and in
         calls of `--chunk` queries (the server's --max-chunk-queries) at the same batch size. Rounds
         alternate the configurations; the median of `--rounds` is printed. Also 48 queries one
         per call (a lone client's request), per precision.
  same:  for each `--worlds` world, its dense index (built on first use, fp32) searched with every
         train question encoded in fp32 and in bf16-mixed: the share of questions whose top-3 (ids,
         in order) are identical, whose top-1 is, and the mean overlap of the top-10 sets.

    python benchmarks/encode_precision.py [--threads 1] [--rounds 5] [--worlds small,default]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_env.qa_data import load_qa  # noqa: E402
from search_env.threads import apply_threads  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402

SINGLES = 48  # queries encoded one per call, each round


def questions_of(world: str) -> list[str]:
    return list(dict.fromkeys(r.question for r in load_qa(ensure_world(world).qa["train"])))


def speed(args: argparse.Namespace) -> None:
    from agent_server.encoder import cpu_has_native_bf16, load_encoder

    queries = questions_of("small")[: args.queries]
    encoders = {p: load_encoder(None, "cpu", p) for p in ("fp32", "bf16-mixed")}
    configs = [
        (p, b, c) for p in encoders for b in args.batch_sizes for c in (0, args.chunk) if not c or c < len(queries)
    ]
    for enc in encoders.values():
        enc.encode_queries(queries[:256])  # warm: oneDNN picks its kernels on first use
    times: dict[tuple[str, int, int], list[float]] = {c: [] for c in configs}
    singles: dict[str, list[float]] = {}
    for r in range(args.rounds):
        order = configs[r % len(configs) :] + configs[: r % len(configs)]
        for precision, batch, chunk in order:
            step = chunk or len(queries)
            started = time.perf_counter()
            for s in range(0, len(queries), step):
                encoders[precision].encode_queries(queries[s : s + step], batch_size=batch)
            times[(precision, batch, chunk)].append(time.perf_counter() - started)
        for precision, enc in encoders.items():  # one query per call, as a lone client's request
            started = time.perf_counter()
            for q in queries[:SINGLES]:
                enc.encode_queries([q])
            singles.setdefault(precision, []).append((time.perf_counter() - started) / SINGLES)
    print(
        f"{len(queries)} small-world train questions, torch threads {args.threads}, native bf16 "
        f"{cpu_has_native_bf16()}; median of {args.rounds} alternating rounds (ms for all {len(queries)})"
    )
    fp32_128 = statistics.median(times[("fp32", 128, 0)]) if ("fp32", 128, 0) in times else None
    for precision, batch, chunk in configs:
        ms = 1000 * statistics.median(times[(precision, batch, chunk)])
        calls = f"calls of {chunk}" if chunk else "one call"
        ratio = f"  ({fp32_128 * 1000 / ms:.2f}x fp32 batch 128 one call)" if fp32_128 else ""
        print(
            f"  {precision:>10} batch {batch:>4} {calls:>13}: {ms:8.1f} ms  {len(queries) / ms * 1000:7.1f} q/s{ratio}"
        )

    for precision, ts in singles.items():
        print(f"  {precision:>10} one query per call: {1000 * statistics.median(ts):.1f} ms per query")


def same(args: argparse.Namespace) -> None:
    from agent_server.backends.dense import DenseRetriever
    from agent_server.embedded_indexes import ensure_index
    from agent_server.encoder import load_encoder

    encoders = {p: load_encoder(None, "cpu", p) for p in ("fp32", "bf16-mixed")}
    for world in args.worlds:
        index = ensure_index("dense", ensure_world(world).corpus)
        queries = questions_of(world)
        vectors = {p: enc.encode_queries(queries) for p, enc in encoders.items()}
        cosine = (vectors["fp32"] * vectors["bf16-mixed"]).sum(axis=1)  # both unit norm
        ids = {}
        for precision, enc in encoders.items():
            retriever = DenseRetriever(index, enc)
            ids[precision] = [[h.id for h in hits] for hits in retriever.search(queries, 10)]
            retriever.close()
        a, b = ids["fp32"], ids["bf16-mixed"]
        top3 = sum(x[:3] == y[:3] for x, y in zip(a, b, strict=True)) / len(a)
        top1 = sum(x[:1] == y[:1] for x, y in zip(a, b, strict=True)) / len(a)
        overlap = statistics.mean(len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True))
        print(
            f"world {world}: {len(queries)} train questions, bf16-mixed vs fp32 through the dense backend: "
            f"top-3 identical {top3:.1%}, top-1 identical {top1:.1%}, top-10 overlap {overlap:.1%}; "
            f"query vectors' cosine min {cosine.min():.6f} mean {cosine.mean():.6f}"
        )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--queries", type=int, default=512)
    p.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[64, 128, 256, 512])
    p.add_argument("--chunk", type=int, default=256, help="the server's --max-chunk-queries (0: skip)")
    p.add_argument("--worlds", type=lambda s: [w for w in s.split(",") if w], default=["small", "default"])
    p.add_argument("--skip-speed", action="store_true")
    args = p.parse_args()
    apply_threads(args.threads, default=args.threads, load_torch=True)
    if not args.skip_speed:
        speed(args)
    same(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
