"""`search-trainer`: train with GRPO(+LLDS) (`train`), draw the diagnostics (`plot`), run the collapse
monitor over a training log (`monitor`), and the embedded default run end to end (`demo`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("trainer")

# Shorthand flags -> config keys (anything else: --set section.key=value).
SHORTHANDS = {
    "model": "model.name_or_path",
    "retriever_url": "env.retriever_url",
    "env_url": "env.env_url",
    "data": "env.data",
    "group_size": "rollout.group_size",
    "questions_per_step": "rollout.questions_per_step",
    "lr": "optim.lr",
    "kl_coef": "loss.kl_coef",
    "clip": None,  # sets clip_low and clip_high
    "llds_lambda": "llds.lam",
    "llds_gate": "llds.gate",
    "max_turns": "env.max_turns",
    "steps": "run.steps",
    "seed": "run.seed",
    "out_dir": "run.out_dir",
    "resume": "run.resume",
}


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        type=Path,
        help="YAML or TOML file (sections: model, env, rollout, optim, loss, llds, run, diagnostics)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set optim.ppo_mini_batch_size=4 (repeatable)",
    )
    p.add_argument("--model", help="embedded | smollm2 | a Hugging Face model name or path")
    p.add_argument("--retriever-url")
    p.add_argument("--env-url", help="an env server: episodes run there")
    p.add_argument("--data", help="world:<preset>, a QA file, or a Hugging Face data set")
    p.add_argument("--group-size", type=int)
    p.add_argument("--questions-per-step", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--kl-coef", type=float)
    p.add_argument("--clip", type=float)
    p.add_argument("--llds", action=argparse.BooleanOptionalAction, default=None, help="GRPO+LLDS or plain GRPO")
    p.add_argument("--llds-lambda", type=float)
    p.add_argument("--llds-gate", choices=["action", "response", "token"])
    p.add_argument("--max-turns", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--out-dir")
    p.add_argument("--resume", help="a run directory or checkpoint to continue")


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    out = list(args.overrides)
    for flag, key in SHORTHANDS.items():
        value = getattr(args, flag, None)
        if value is None:
            continue
        if flag == "clip":
            out += [f"loss.clip_low={value}", f"loss.clip_high={value}"]
        else:
            out.append(f"{key}={value}")
    if getattr(args, "llds", None) is not None:
        out.append(f"llds.enabled={str(args.llds).lower()}")
    return out


def run_train(args: argparse.Namespace) -> int:
    from trainer.config import ConfigError, load_config

    try:
        config = load_config(args.config, overrides_from_args(args))
    except ConfigError as err:
        print(f"search-trainer: {err}", file=sys.stderr)
        return 2
    from trainer.checkpoint import CheckpointMismatch
    from trainer.grpo_trainer import GRPOTrainer
    from trainer.policy_loading import PolicyError
    from trainer.preflight import EnvUnreachable

    try:
        result = GRPOTrainer(config).train()
    except (EnvUnreachable, PolicyError, CheckpointMismatch, FileNotFoundError) as err:
        print(f"search-trainer: {err}", file=sys.stderr)
        return 2
    from search_env.evaluation.table import render_table

    if result.before:
        print(render_table(result.before, title="held-out evaluation before training"))
    if result.after:
        print(render_table(result.after, title="held-out evaluation after training"))
    print(f"metrics: {result.run_dir / 'metrics.jsonl'}\nplot: {result.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search-trainer", description="GRPO + LLDS for search agents")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a policy with GRPO(+LLDS)")
    _add_train_args(train)
    plot = sub.add_parser("plot", help="draw the diagnostics of a metrics file", add_help=False)
    plot.add_argument("rest", nargs=argparse.REMAINDER)
    monitor = sub.add_parser(
        "monitor", help="the collapse monitor over a training log (ours, verl, TRL, TensorBoard)", add_help=False
    )
    monitor.add_argument("rest", nargs=argparse.REMAINDER)
    demo = sub.add_parser("demo", help="the embedded default run: servers, warm start, GRPO+LLDS, before/after")
    _add_train_args(demo)
    demo.add_argument("--world", default="small")
    from trainer.death_spiral.runner import add_arguments

    spiral = sub.add_parser("death-spiral", help="plain GRPO vs GRPO+LLDS on the same seeds where GRPO collapses")
    add_arguments(spiral)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    if argv[:1] == ["plot"]:
        from trainer.diagnostics.plots import plot_main

        return plot_main(argv[1:])
    if argv[:1] == ["monitor"]:
        from trainer.monitor_cli import monitor_main

        return monitor_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "train":
        return run_train(args)
    if args.command == "death-spiral":
        from trainer.death_spiral.runner import run_death_spiral

        return run_death_spiral(args)
    if args.command == "demo":
        from trainer.embedded_demo import run_demo

        return run_demo(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
