"""`search-trainer`: train with GRPO(+LLDS) (`train`), benchmark a Hugging Face model the way the
trainer plays it (`eval`), draw the diagnostics (`plot`), run the collapse monitor over a training log
(`monitor`), the embedded default run end to end (`demo`), and the death-spiral experiment
(`death-spiral`: plain GRPO vs GRPO+LLDS on the same seeds)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

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
    p.add_argument("--retriever-url", help="the retrieval server, or several replicas comma-separated")
    p.add_argument("--env-url", help="an env server, or several comma-separated: episodes run there")
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
    add_threads_arg(p)


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch/OpenMP threads of this process (default: half the CPUs it may use, at least 1, leaving "
        "the rest to the retriever and env server; see README, Threads)",
    )


def _threads(args: argparse.Namespace) -> int | None:
    """Set the process's threads (search_env.threads) from --threads; None when fine, else the exit code."""
    from search_env.threads import apply_threads, trainer_default

    try:
        apply_threads(args.threads, default=trainer_default(), load_torch=True)
    except ValueError as err:
        print(f"search-trainer: {err}", file=sys.stderr)
        return 2
    return None


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
    from search_env.remote_env import EnvServerRefused
    from search_env.safe_paths import UnsafeName
    from search_env.world_pairing import WorldMismatch
    from trainer.checkpoint import CheckpointMismatch, CheckpointUnreadable
    from trainer.grpo_trainer import GRPOTrainer
    from trainer.policy_loading import PolicyError
    from trainer.preflight import EnvUnreachable, LimitMismatch

    try:
        result = GRPOTrainer(config).train()
    except (
        EnvUnreachable,
        LimitMismatch,
        WorldMismatch,
        PolicyError,
        CheckpointMismatch,
        CheckpointUnreadable,
        UnsafeName,
        FileNotFoundError,
    ) as err:
        print(f"search-trainer: {err}", file=sys.stderr)
        return 2
    except EnvServerRefused as err:
        # The env server refusing the run's sessions (data, options, or a retriever of another world: 409)
        # is the run's configuration, not a bug: its message says it all. (A refused step ends its episode instead.)
        print(
            f"search-trainer: the env server refused the run's sessions ({err.status}): {err.message}", file=sys.stderr
        )
        return 2
    from search_env.evaluation.table import render_table

    if result.before:
        print(render_table(result.before, title="held-out evaluation before training"))
    if result.after:
        print(render_table(result.after, title="held-out evaluation after training"))
    print(f"metrics: {result.run_dir / 'metrics.jsonl'}\nplot: {result.plot}")
    return 0


def _add_eval_args(p: argparse.ArgumentParser) -> None:
    from search_env.evaluation.command import add_benchmark_args

    p.add_argument(
        "--model",
        required=True,
        help="smollm2, or a Hugging Face model name or local path (a run's checkpoint model folder, "
        "a built embedded policy under $SEARCHGYM_HOME/policies)",
    )
    p.add_argument(
        "--openai-base-url",
        help="sample the turns from this OpenAI-compatible server (vLLM, tokens in and out) instead of loading "
        "--model's weights; --model then gives the tokenizer",
    )
    p.add_argument("--served-model", help="the model name the --openai-base-url server serves (default: --model)")
    p.add_argument("--gguf-file", help="load this GGUF file of --model")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--device", default="auto")
    p.add_argument("--pad-token", help="for a tokenizer without one (e.g. its EOS token)")
    p.add_argument(
        "--prompt-template",
        default="search-r1",
        help="search-r1, tiny (the embedded policy's), or a template with {question} (default: %(default)s)",
    )
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default)")
    p.add_argument("--max-new-tokens", type=int, default=500, help="tokens per turn (Search-R1: 500)")
    p.add_argument(
        "--max-total-tokens",
        type=int,
        default=4096,
        help="prompt + all turns and observations; an episode past it ends with reward 0",
    )
    add_threads_arg(p)
    add_benchmark_args(p)


def run_eval(args: argparse.Namespace) -> int:
    """Load the model and play the benchmark through the rollout engine (trainer.evaluation)."""
    from pydantic import ValidationError

    from search_env.evaluation.command import DEFAULT_DATA, run_benchmark_command
    from search_env.evaluation.datasets import EvalDataError, parse_data_specs
    from trainer.config import ModelSection
    from trainer.evaluation import EnginePlayer
    from trainer.grpo_trainer import prompt_template
    from trainer.policy_loading import (
        PolicyError,
        check_policy_source,
        check_tokenizer,
        load_model,
        load_tokenizer,
        resolve_device,
    )
    from trainer.rollout.hf_generator import HFGenerator
    from trainer.rollout.openai_generator import OpenAIGenerator

    try:
        parse_data_specs(args.data or [DEFAULT_DATA], args.split)  # a bad spec fails before the model loads
        if args.model == "embedded":
            raise PolicyError("give a built embedded policy by its path ($SEARCHGYM_HOME/policies/embedded-...)")
        cfg = ModelSection(
            name_or_path=args.model,
            gguf_file=args.gguf_file,
            dtype=args.dtype,
            device=args.device,
            pad_token=args.pad_token,
        )
        check_policy_source(cfg)
        tokenizer = load_tokenizer(cfg)
        check_tokenizer(tokenizer, cfg)
        model = None if args.openai_base_url else load_model(cfg, resolve_device(cfg.device))
    except (EvalDataError, PolicyError, ValidationError, OSError) as err:
        print(f"search-trainer: {err}", file=sys.stderr)
        return 2
    concurrency = args.concurrency or 16
    name = "smollm2-135m-instruct" if args.model == "smollm2" else f"hf:{args.model}"
    label = "hf"
    if args.openai_base_url:
        served = args.served_model or args.model
        generator: Any = OpenAIGenerator(args.openai_base_url, served, batch_size=concurrency)
        name, label = f"openai:{served}", "openai"
    else:
        generator = HFGenerator(model, tokenizer, batch_size=concurrency)
    player = EnginePlayer(
        generator,
        tokenizer,
        name=name,
        max_new_tokens_per_turn=args.max_new_tokens,
        max_total_tokens=args.max_total_tokens,
        temperature=args.temperature,
    )
    try:
        return run_benchmark_command(
            player,
            args,
            label=label,
            concurrency=concurrency,
            env_options={"prompt_template": prompt_template(args.prompt_template)},
        )
    finally:
        if isinstance(generator, OpenAIGenerator):
            generator.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search-trainer", description="GRPO + LLDS for search agents")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a policy with GRPO(+LLDS)")
    _add_train_args(train)
    evaluate = sub.add_parser(
        "eval",
        help="benchmark a Hugging Face model as the trainer plays it (tokens in, tokens out, greedy) "
        "on the world or the Search-R1 evaluation sets",
    )
    _add_eval_args(evaluate)
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
    if args.command in ("train", "eval", "demo") and (code := _threads(args)) is not None:
        return code
    if args.command == "train":
        return run_train(args)
    if args.command == "death-spiral":
        from trainer.death_spiral.runner import run_death_spiral

        return run_death_spiral(args)
    if args.command == "eval":
        return run_eval(args)
    if args.command == "demo":
        from trainer.embedded_demo import run_demo

        return run_demo(args, run_train)
    return 2


if __name__ == "__main__":
    sys.exit(main())
