"""Trainer speed: rollouts (cold and warm tokens/s, the engine's overhead against raw HF `generate`,
where a multi-turn collect spends its time, pipelined env steps on and off), and the time of one
update round for GRPO and for GRPO+LLDS on the SAME rollout batch (the LLDS overhead as a ratio).

    python benchmarks/trainer.py [--model embedded|smollm2|NAME] [--world small] [--rollouts 5]
                                 [--repeats 5] [--no-update] [--retriever-url URL] [--set KEY=VALUE ...]

It starts a BM25 retrieval server over the world (or uses the one at --retriever-url) and sets the
trainer up (building the embedded policy on first use). Then, each measured in the same run with the
variants alternating and medians over repeats:

- rollout tokens/s: the first (cold) collect apart, then the median of `--rollouts` warm collects,
  and the warm collects' time split into generation / env step / retrieval / tokenisation / other;
- one turn: raw `model.generate` (the same model, first-turn prompts, batch, sampling, stop strings
  and seed) against the engine's generator (`HFGenerator`: sampler log-probs and per-row stop cut),
  and against a whole one-turn collect (env reset, generation, tokenisation, env step);
- pipelining: the same questions and seed collected with `rollout.pipeline_splits` 1, and 2 without
  and with `rollout.overlap_env` (the last two play identical episodes);
- update rounds alternating GRPO and GRPO+LLDS, restoring the weights and optimizer state before
  each round so both see identical inputs.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_env.server_process import ServerProcess  # noqa: E402
from trainer.config import load_config  # noqa: E402
from trainer.diagnostics import StepMetrics  # noqa: E402
from trainer.grpo_trainer import GRPOTrainer  # noqa: E402
from trainer.rollout.stats import RolloutStats  # noqa: E402
from trainer.transcript import encode_prompt  # noqa: E402

console = Console(width=150)


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title)
    for col in columns:
        table.add_column(col)
    return table


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- rollout tokens/s and where a collect spends its time ------------------------------------------------
def breakdown(stats: RolloutStats) -> dict[str, float]:
    """Wall seconds of one collect by kind of work (on the calling thread; with overlap_env, env steps
    hidden behind generation are not counted again)."""
    other = stats.wall_time_s - stats.generation_time_s - stats.tokenize_time_s - stats.env_wait_time_s
    waited = stats.env_wait_time_s
    retrieval = min(stats.retrieval_time_s, waited)
    return {
        "generation": stats.generation_time_s,
        "env step (reset, parse, reward; not retrieval)": waited - retrieval,
        "retrieval (/retrieve requests)": retrieval,
        "tokenisation and turn bookkeeping": stats.tokenize_time_s,
        "other": max(other, 0.0),
        "total (wall)": stats.wall_time_s,
    }


def rollout_throughput(trainer: GRPOTrainer, rollouts: int) -> Any:
    _, batch, _ = trainer.collect()
    cold = trainer.engine.last_stats
    assert cold is not None
    warm: list[RolloutStats] = []
    for _ in range(rollouts):
        _, batch, _ = trainer.collect()
        assert trainer.engine.last_stats is not None
        warm.append(trainer.engine.last_stats)
    table = _table(f"rollout: {len(batch)} episodes per collect, 1 cold + {rollouts} warm collects", "measure", "value")
    table.add_row("cold (first) collect tokens/s", f"{cold.tokens_per_s:.0f} ({cold.generated_tokens} tokens)")
    table.add_row("warm collects tokens/s (median)", f"{_median([s.tokens_per_s for s in warm]):.0f}")
    table.add_row(
        "warm collects tokens/s (min-max)",
        f"{min(s.tokens_per_s for s in warm):.0f}-{max(s.tokens_per_s for s in warm):.0f}",
    )
    table.add_row("warm turns per episode (median)", f"{_median([s.mean_turns for s in warm]):.2f}")
    table.add_row("warm searches per episode (median)", f"{_median([s.mean_searches for s in warm]):.2f}")
    console.print(table)

    parts = [breakdown(s) for s in warm]
    wall = _median([p["total (wall)"] for p in parts])
    table = _table(
        f"multi-turn collect, where the time goes (median of {rollouts} warm collects)",
        "part",
        "seconds",
        "share of wall",
    )
    for key in parts[0]:
        sec = _median([p[key] for p in parts])
        table.add_row(key, f"{sec:.3f}", f"{sec / wall:.0%}")
    gen = _median([p["generation"] for p in parts])
    table.add_row("collect over generation alone (wall / generation - 1)", "", f"{wall / gen - 1:.0%}")
    console.print(table)
    return batch


# -- one turn: raw HF generate against the engine -------------------------------------------------------
def first_turn_prompts(trainer: GRPOTrainer, questions: list[int]) -> list[list[int]]:
    env = trainer.make_env()
    prompts = []
    for q in questions:
        prompt, _ = env.reset(options={"index": q})
        prompts += [encode_prompt(trainer.tokenizer, prompt)] * trainer.engine.group_size
    env.close()
    return prompts


def raw_generate(trainer: GRPOTrainer, prompts: list[list[int]]) -> int:
    """Plain `model.generate` on the left-padded batch with the engine's sampling settings and stop
    rule (its stop-string tables built once, as the engine's are); returns the generated tokens."""
    from transformers import GenerationConfig

    gen = trainer.engine.generator
    cfg = trainer.config.rollout
    model = gen.model
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), gen.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    sample = cfg.temperature > 0
    config = GenerationConfig(
        max_new_tokens=cfg.max_new_tokens,
        eos_token_id=gen.eos_token_ids,
        pad_token_id=gen.pad_token_id,
        **(
            {"do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": 0}
            if sample
            else {"do_sample": False}
        ),
    )
    from transformers import StoppingCriteriaList

    model.eval()
    tokens = 0
    with torch.no_grad():
        for start in range(0, len(prompts), gen.batch_size):
            out = model.generate(
                input_ids=ids[start : start + gen.batch_size].to(gen.device),
                attention_mask=mask[start : start + gen.batch_size].to(gen.device),
                generation_config=config,
                stopping_criteria=StoppingCriteriaList(gen._stop_criteria(trainer.engine.stop_strings)),
            )
            new = out[:, width:]
            # rows that stopped early are padded to the longest: count up to each row's last real token
            real = (new != gen.pad_token_id).long()
            tokens += int((real.flip(-1).cummax(-1).values.flip(-1)).sum())
    _sync()
    return tokens


def one_turn_overhead(trainer: GRPOTrainer, questions: list[int], repeats: int) -> None:
    engine = trainer.engine
    prompts = first_turn_prompts(trainer, questions)
    cfg = trainer.config.rollout

    def engine_generate() -> int:
        out = engine.generator.generate(
            prompts,
            cfg.max_new_tokens,
            temperature=engine.temperature,
            top_p=engine.top_p,
            stop_strings=engine.stop_strings,
        )
        _sync()
        return sum(len(o) for o in out)

    def engine_collect() -> int:
        saved, engine.max_turns = engine.max_turns, 1
        try:
            engine.collect(trainer.rollout_envs(len(prompts)), questions)
        finally:
            engine.max_turns = saved
        assert engine.last_stats is not None
        return engine.last_stats.generated_tokens

    variants: dict[str, Callable[[], int]] = {
        "raw HF generate": lambda: raw_generate(trainer, prompts),
        "engine generator (HFGenerator.generate)": engine_generate,
        "engine collect, one turn (reset + generate + tokenise + env step)": engine_collect,
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    tokens: dict[str, list[int]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(repeats + 1):  # the first round warms up and is dropped; each round starts elsewhere
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = variants[name]
            torch.manual_seed(r * 7919 + 1)
            began = time.perf_counter()
            n = fn()
            times[name].append(time.perf_counter() - began)
            tokens[name].append(n)
    raw = _median(times["raw HF generate"][1:])
    same = all(tokens[name] == tokens["raw HF generate"] for name in variants)
    table = _table(
        f"one turn, {len(prompts)} first-turn prompts in one batch (same seeds; median of {repeats}, "
        f"after one warm-up round); the same tokens sampled by every variant in every round: {same}",
        "variant",
        "median s",
        "tokens",
        "vs raw generate",
    )
    for name in variants:
        t = _median(times[name][1:])
        table.add_row(name, f"{t:.3f}", f"{_median([float(x) for x in tokens[name][1:]]):.0f}", f"{t / raw:.3f}x")
    console.print(table)


# -- pipelining: env steps overlapped with generation ------------------------------------------------------
def pipelining(trainer: GRPOTrainer, questions: list[int], repeats: int) -> None:
    engine = trainer.engine
    modes = {
        "pipeline_splits 1 (default)": (1, False),
        "pipeline_splits 2": (2, False),
        "pipeline_splits 2, overlap_env": (2, True),
    }
    saved = engine.pipeline_splits, engine.overlap_env
    stats: dict[str, list[RolloutStats]] = {k: [] for k in modes}
    played: dict[str, list[Any]] = {k: [] for k in modes}
    envs = trainer.rollout_envs(len(questions) * engine.group_size)
    try:
        names = list(modes)
        for r in range(repeats + 1):  # the first round warms up and is dropped; each round starts elsewhere
            for name in names[r % len(names) :] + names[: r % len(names)]:
                engine.pipeline_splits, engine.overlap_env = modes[name]
                torch.manual_seed(1000 + r)
                episodes = engine.collect(envs, questions)
                assert engine.last_stats is not None
                if r:
                    stats[name].append(engine.last_stats)
                    played[name].append([e.transcript.input_ids for e in episodes])
    finally:
        engine.pipeline_splits, engine.overlap_env = saved
    same = played["pipeline_splits 2"] == played["pipeline_splits 2, overlap_env"]
    base = _median([s.wall_time_s for s in stats["pipeline_splits 1 (default)"]])
    table = _table(
        f"pipelining, {len(questions) * engine.group_size} episodes, same questions and seeds, modes "
        f"alternating, each round starting at another (median of {repeats}); splits 2 with and without "
        f"overlap identical: {same}",
        "mode",
        "wall s",
        "tokens/s",
        "generation s",
        "env step s (all)",
        "env waited s",
        "vs default",
    )
    for name, runs in stats.items():
        wall = _median([s.wall_time_s for s in runs])
        table.add_row(
            name,
            f"{wall:.3f}",
            f"{_median([s.tokens_per_s for s in runs]):.0f}",
            f"{_median([s.generation_time_s for s in runs]):.3f}",
            f"{_median([s.env_time_s for s in runs]):.3f}",
            f"{_median([s.env_wait_time_s for s in runs]):.3f}",
            f"{wall / base:.3f}x",
        )
    console.print(table)


# -- update rounds --------------------------------------------------------------------------------------
def update_rounds(trainer: GRPOTrainer, batch: Any, repeats: int, args: argparse.Namespace) -> None:
    model = trainer.accelerator.unwrap_model(trainer.model)
    weights = copy.deepcopy(model.state_dict())
    opt_state = copy.deepcopy(trainer.optimizer.state_dict())
    base = trainer._loss_options(1.0)
    modes = {"GRPO": dataclasses.replace(base, llds=False), "GRPO+LLDS": dataclasses.replace(base, llds=True)}
    times: dict[str, list[float]] = {name: [] for name in modes}
    for r in range(repeats):
        for name, options in modes.items():
            model.load_state_dict(weights)
            trainer.optimizer.load_state_dict(opt_state)
            began = time.perf_counter()
            trainer.update(batch, options, StepMetrics(r), step=r)
            _sync()
            times[name].append(time.perf_counter() - began)
    grpo, llds = _median(times["GRPO"]), _median(times["GRPO+LLDS"])
    config = trainer.config
    title = f"{args.model} on world '{args.world}': {len(batch)} episodes, {batch.num_generated} generated tokens"
    table = _table(f"{title}, {config.optimizer_steps_per_round} optimizer steps per round", "measure", "value")
    table.add_row("update round, GRPO (median s)", f"{grpo:.3f}")
    table.add_row("update round, GRPO+LLDS (median s)", f"{llds:.3f}")
    table.add_row("LLDS overhead (ratio)", f"{llds / grpo:.3f}x")
    console.print(table)


def main() -> None:
    p = argparse.ArgumentParser(description="rollout speed and overheads; GRPO vs GRPO+LLDS update time")
    p.add_argument("--model", default="embedded")
    p.add_argument("--world", default="small")
    p.add_argument("--repeats", type=int, default=5, help="update rounds, one-turn and pipelining rounds")
    p.add_argument("--rollouts", type=int, default=5, help="warm rollout batches timed (after one cold one)")
    p.add_argument("--no-update", action="store_true", help="rollouts only")
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
        device = torch.cuda.get_device_name() if trainer.device.type == "cuda" else str(trainer.device)
        console.print(
            f"{args.model} on world '{args.world}', {device}, dtype {config.model.dtype}, "
            f"torch threads {torch.get_num_threads()}"
        )

        batch = rollout_throughput(trainer, args.rollouts)
        questions = random.Random(0).sample(range(len(trainer.records)), config.rollout.questions_per_step)
        one_turn_overhead(trainer, questions, args.repeats)
        pipelining(trainer, questions, args.repeats)
        if not args.no_update:
            update_rounds(trainer, batch, args.repeats, args)
        trainer.engine.close()
        if trainer.retriever is not None:
            trainer.retriever.close()
    finally:
        if retriever is not None:
            retriever.stop()


if __name__ == "__main__":
    main()
