"""Trainer speed: the time of one update round for GRPO and for GRPO+LLDS on the SAME rollout batch
from the same weights, in the same run (the LLDS overhead as a ratio), and rollout tokens per second.

    python benchmarks/trainer.py [--model embedded|smollm2|NAME] [--world small] [--repeats 5]
                                 [--retriever-url URL] [--set KEY=VALUE ...]

It starts a BM25 retrieval server over the world (or uses the one at --retriever-url), sets the
trainer up (building the embedded policy on first use), collects rollout batches, then times update
rounds alternating GRPO and GRPO+LLDS, restoring the weights and optimizer state before each round so
both see identical inputs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_server.server_process import ServerProcess  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.diagnostics import StepMetrics  # noqa: E402
from trainer.grpo_trainer import GRPOTrainer  # noqa: E402

console = Console()


def main() -> None:
    p = argparse.ArgumentParser(description="GRPO vs GRPO+LLDS update time, and rollout tokens/s")
    p.add_argument("--model", default="embedded")
    p.add_argument("--world", default="small")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--rollouts", type=int, default=3, help="rollout batches timed for tokens/s")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--log-dir", type=Path, default=Path("runs/bench-trainer"))
    p.add_argument("--retriever-url", help="a running retrieval server to use instead of starting BM25")
    args = p.parse_args()
    args.log_dir.mkdir(parents=True, exist_ok=True)

    retriever = None
    if args.retriever_url is None:
        retriever = ServerProcess(["retriever", "--backend", "bm25", "--world", args.world], args.log_dir / "r.log")
        retriever.start()
    try:
        if retriever is not None:
            retriever.wait_ready(timeout=1800)
        url = args.retriever_url or retriever.url
        template = "tiny" if args.model == "embedded" else "search-r1"
        config = load_config(
            ROOT / "configs" / "embedded.yaml",
            [
                f"model.name_or_path={args.model}",
                f"env.retriever_url={url}",
                f"env.data=world:{args.world}",
                f"env.prompt_template={template}",
                f"run.out_dir={args.log_dir / 'run'}",
                *args.overrides,
            ],
        )
        trainer = GRPOTrainer(config)
        trainer.setup()

        tokens, seconds = 0, 0.0
        for _ in range(args.rollouts):
            _, batch, _ = trainer.collect()
            tokens += trainer.engine.last_stats.generated_tokens
            seconds += trainer.engine.last_stats.wall_time_s
        console.print(
            f"rollout: {tokens} generated tokens in {seconds:.1f}s over {args.rollouts} batches "
            f"of {len(batch)} episodes"
        )

        model = trainer.accelerator.unwrap_model(trainer.model)
        weights = copy.deepcopy(model.state_dict())
        opt_state = copy.deepcopy(trainer.optimizer.state_dict())
        base = trainer._loss_options(1.0)
        modes = {"GRPO": dataclasses.replace(base, llds=False), "GRPO+LLDS": dataclasses.replace(base, llds=True)}
        times: dict[str, list[float]] = {name: [] for name in modes}
        for r in range(args.repeats):
            for name, options in modes.items():
                model.load_state_dict(weights)
                trainer.optimizer.load_state_dict(opt_state)
                began = time.perf_counter()
                trainer.update(batch, options, StepMetrics(r), step=r)
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                times[name].append(time.perf_counter() - began)

        grpo, llds = statistics.median(times["GRPO"]), statistics.median(times["GRPO+LLDS"])
        title = f"{args.model} on world '{args.world}': {len(batch)} episodes, {batch.num_generated} generated tokens"
        table = Table(title=f"{title}, {config.optimizer_steps_per_round} optimizer steps per round")
        for col in ("measure", "value"):
            table.add_column(col)
        table.add_row("update round, GRPO (median s)", f"{grpo:.3f}")
        table.add_row("update round, GRPO+LLDS (median s)", f"{llds:.3f}")
        table.add_row("LLDS overhead (ratio)", f"{llds / grpo:.3f}x")
        table.add_row("rollout tokens/s", f"{tokens / seconds:.0f}")
        table.add_row("device", torch.cuda.get_device_name() if trainer.device.type == "cuda" else str(trainer.device))
        table.add_row("dtype", config.model.dtype)
        console.print(table)
    finally:
        if retriever is not None:
            retriever.stop()


if __name__ == "__main__":
    main()
