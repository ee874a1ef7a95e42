"""`search-trainer death-spiral`: plain GRPO against GRPO+LLDS (and its rivals SAPO and DPPO, `--arms`) on the same
seeds, in a regime where GRPO collapses.

Each (arm, seed) is one ordinary training run (`search-trainer train` in a subprocess, so runs are isolated
and can go side by side, one CPU thread each) with the experiment's config (configs/death-spiral.yaml), the
seed as `run.seed` (same question order and same first rollouts in both arms) and one shared warm start
(`model.embedded_seed`), so the arms differ only in their `ARMS` overrides. Runs land in `OUT/<arm>/seed-<n>/`
(metrics.jsonl, eval/, train.log); a run that already finished (its summary.json exists) is not run again,
so the command resumes where it stopped. When all runs are done, `OUT/summary.json` and
`OUT/death-spiral.png` are written by `trainer.death_spiral.report`, with the collapse criterion that was
declared before the first run (`OUT/criterion.json`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from trainer.death_spiral.criterion import CollapseCriterion

# name -> a shipped config (trainer.shipped_configs: configs/ in a checkout). "toy": the 2-layer policy
# trained from nothing at lr 1e-3 (docs/experiments/death-spiral-sweep.md); "pretrained": a 4-layer
# 256-wide policy pretrained on the corpus, several groups per optimizer step (issue 20 part 4).
PRESETS = {"toy": "death-spiral.yaml", "pretrained": "death-spiral-pretrained.yaml"}
CONFIG = PRESETS["toy"]
# arm -> the overrides that make it; every arm runs the preset's config otherwise unchanged. The paper's
# ablations: lambda (Fig. 8), the response gate against the action gate, LLDS-MA (App. B.2.1's beta ramp).
ARMS: dict[str, list[str]] = {
    "grpo": ["llds.enabled=false"],
    "llds": ["llds.enabled=true"],
    "llds-0.01": ["llds.enabled=true", "llds.lam=0.01"],
    "llds-0.1": ["llds.enabled=true", "llds.lam=0.1"],
    "llds-1": ["llds.enabled=true", "llds.lam=1.0"],
    "llds-response": ["llds.enabled=true", "llds.gate=response"],
    "llds-ma": ["llds.enabled=true", "llds.answer_weight_schedule=paper"],
    # LLDS's rivals (issue 20 item 6), each alone: SAPO's conditional KL (arXiv 2603.10069) on the GRPO loss;
    # DPPO's Binary-TV trust region (arXiv 2602.04879) in place of the PPO clip.
    "sapo": ["llds.enabled=false", "loss.sapo=true"],
    "dppo": ["llds.enabled=false", "loss.policy_loss=dppo_tv"],
}
# --quick: one seed of each arm, a few steps with a small warm start: the whole machinery in minutes.
QUICK = [
    "model.embedded_sft_examples=60",
    "model.embedded_sft_steps=20",
    "model.embedded_sft_first_action_steps=20",
    "model.embedded_sft_copy_drill=0",
    "rollout.group_size=4",
    "rollout.questions_per_step=3",
    "rollout.max_new_tokens=32",
    "run.steps=4",
    "run.eval_every=2",
    "run.eval_questions=6",
    "diagnostics.probe_every=2",
    "diagnostics.probe_questions=2",
]


@dataclass
class Run:
    arm: str
    seed: int
    out: Path
    proc: subprocess.Popen[bytes] | None = None
    returncode: int | None = None

    @property
    def done(self) -> bool:
        return (self.out / "summary.json").is_file()

    def steps_logged(self) -> int:
        path = self.out / "metrics.jsonl"
        return sum(1 for line in path.open() if line.strip()) if path.is_file() else 0

    def checkpointed(self) -> bool:
        """Whether an unfinished run left a checkpoint to resume from."""
        from trainer.checkpoint import STATE_FILE, checkpoint_step

        # The same name rule as the resume: step-<digits> only (one that points outside is refused by
        # the resumed run itself, with its one-line message).
        folder = self.out / "checkpoints"
        return folder.is_dir() and any(
            checkpoint_step(p.name) is not None and (p / STATE_FILE).is_file() for p in folder.iterdir()
        )


def plan(out: Path, arms: list[str], seeds: list[int]) -> list[Run]:
    """Runs in the order they start: the arms alternate within each seed, so with two jobs both arms of a
    seed run side by side and share the machine's load alike."""
    return [Run(arm, seed, out / arm / f"seed-{seed}") for seed in seeds for arm in arms]


def _command(run: Run, config: Path, overrides: list[str], retriever_url: str) -> list[str]:
    sets = [
        *overrides,
        *ARMS[run.arm],
        f"run.seed={run.seed}",
        f"run.out_dir={run.out}",
        f"env.retriever_url={retriever_url}",
    ]
    return [
        sys.executable,
        "-m",
        "trainer.cli",
        "train",
        "--config",
        str(config),
        *(x for s in sets for x in ("--set", s)),
    ]


def _launch(run: Run, command: list[str], threads: int) -> None:
    if run.checkpointed():
        # Resume is bit-identical to an uninterrupted run (tests/test_trainer.py); the trainer moves the
        # metrics logged after the checkpoint aside, so metrics.jsonl reads as one run.
        command = [*command, "--set", f"run.resume={run.out}"]
    elif run.out.exists():  # an unfinished run without a checkpoint starts again: its partial metrics would mislead
        shutil.rmtree(run.out)
    run.out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [*command, "--threads", str(threads)]
    with (run.out / "train.log").open("ab") as log:
        run.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def _progress(runs: list[Run], total_steps: int) -> str:
    parts = []
    for run in runs:
        state = "done" if run.done else f"{run.steps_logged()}/{total_steps}" if run.proc else "waiting"
        if run.returncode not in (None, 0):
            state = f"failed ({run.returncode})"
        parts.append(f"{run.arm} s{run.seed}: {state}")
    return " | ".join(parts)


def execute(
    runs: list[Run],
    *,
    config: Path,
    overrides: list[str],
    retriever_url: str,
    jobs: int,
    threads: int,
    total_steps: int,
    poll_s: float = 20.0,
) -> list[Run]:
    """Run every unfinished run, `jobs` at a time with `threads` torch threads each, printing progress
    every `poll_s` seconds. A run that fails is recorded (its log says why) and the others go on."""
    pending = [r for r in runs if not r.done]
    active: list[Run] = []
    last_print = 0.0
    try:
        while pending or active:
            while pending and len(active) < jobs:
                run = pending.pop(0)
                _launch(run, _command(run, config, overrides, retriever_url), threads)
                active.append(run)
            for run in list(active):
                assert run.proc is not None
                if run.proc.poll() is not None:
                    run.returncode = run.proc.returncode
                    active.remove(run)
                    verdict = (
                        "done" if run.returncode == 0 else f"FAILED (exit {run.returncode}; see {run.out}/train.log)"
                    )
                    print(f"[death-spiral] {run.arm} seed {run.seed}: {verdict}", flush=True)
            if time.monotonic() - last_print >= poll_s:
                print(f"[death-spiral] {_progress(runs, total_steps)}", flush=True)
                last_print = time.monotonic()
            time.sleep(0.5)
    finally:
        for run in active:
            if run.proc is not None and run.proc.poll() is None:
                run.proc.terminate()
    return runs


def run_death_spiral(args: argparse.Namespace) -> int:
    from trainer.config import ConfigError, load_config
    from trainer.death_spiral.report import write_report
    from trainer.shipped_configs import shipped_config

    out: Path = args.out
    if args.preset not in PRESETS:
        print(f"search-trainer: unknown preset {args.preset!r}; known: {sorted(PRESETS)}", file=sys.stderr)
        return 2
    args.config = args.config or shipped_config(PRESETS[args.preset])
    overrides = [*(QUICK if args.quick else []), *args.overrides]
    if args.steps is not None:
        overrides.append(f"run.steps={args.steps}")
    seeds = args.seeds if args.seeds else ([1] if args.quick else [1, 2, 3])
    if args.jobs < 1 or args.threads < 1:
        print("search-trainer: --jobs and --threads must be at least 1", file=sys.stderr)
        return 2
    arms = args.arms.split(",")
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        print(f"search-trainer: unknown arm(s) {unknown}; known: {sorted(ARMS)}", file=sys.stderr)
        return 2
    try:  # the whole config is checked here, before any run starts
        config = load_config(args.config, [*overrides, "env.retriever_url=http://127.0.0.1:1"])
    except ConfigError as err:
        print(f"search-trainer: {err}", file=sys.stderr)
        return 2
    if not config.env.data.startswith("world:"):
        print(
            "search-trainer: the death-spiral experiment runs on an embedded world (env.data world:<preset>)",
            file=sys.stderr,
        )
        return 2
    criterion = CollapseCriterion()
    out.mkdir(parents=True, exist_ok=True)
    declared = {
        "criterion": criterion.as_dict(),
        "preset": args.preset,
        "arm_overrides": {arm: ARMS[arm] for arm in arms},
        "arms": arms,
        "seeds": seeds,
        "config": str(args.config),
        "overrides": overrides,
        "steps": config.run.steps,
    }
    (out / "criterion.json").write_text(json.dumps(declared, indent=2))
    print(f"[death-spiral] collapse criterion, declared before the runs: {criterion.describe()}", flush=True)

    runs = plan(out, arms, seeds)
    if args.report_only:
        summary = write_report(out, runs, criterion)
        print(summary["text"])
        _publish(out, runs, args.publish)
        return 0
    retriever = None
    url = args.retriever_url
    # SIGTERM unwinds like Ctrl-C, so the runs and the retriever this command started end with it.
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)) if main_thread else None
    try:
        if url is None and not all(r.done for r in runs):
            from search_env.server_process import ServerProcess

            world = config.env.data.partition(":")[2]
            retriever = ServerProcess(["retriever", "--backend", "bm25", "--world", world], out / "retriever.log")
            print(
                f"[death-spiral] starting the BM25 retriever over world '{world}' (log: {retriever.log_path})",
                flush=True,
            )
            url = retriever.start().wait_ready(timeout=1800).url
        execute(
            runs,
            config=args.config,
            overrides=overrides,
            retriever_url=url or "",
            jobs=args.jobs,
            threads=args.threads,
            total_steps=config.run.steps,
        )
    finally:
        if retriever is not None:
            retriever.stop()
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    summary = write_report(out, runs, criterion)
    print(summary["text"], flush=True)
    print(f"[death-spiral] {out / 'summary.json'}\n[death-spiral] {out / 'death-spiral.png'}")
    _publish(out, runs, args.publish)
    return 0 if all(r.done for r in runs) else 1


def _publish(out: Path, runs: list[Run], dest: Path | None) -> None:
    from trainer.death_spiral.report import publish

    if dest is not None:
        written = publish(out, runs, dest)
        print(f"[death-spiral] published {len(written)} files to {dest}", flush=True)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, required=True, help="output directory (runs, summary.json, death-spiral.png)")
    p.add_argument("--quick", action="store_true", help="one seed of each arm, a few steps: the machinery in minutes")
    p.add_argument("--seeds", type=int, nargs="+", help="run seeds (default 1 2 3; --quick: 1)")
    p.add_argument(
        "--preset",
        default="toy",
        help=f"the experiment's regime, one of {sorted(PRESETS)} (configs/{PRESETS['toy']}, "
        f"configs/{PRESETS['pretrained']}); --config overrides it",
    )
    p.add_argument(
        "--arms",
        default="grpo,llds",
        help="comma-separated arms: " + ", ".join(f"{a} ({' '.join(o)})" for a, o in ARMS.items()),
    )
    p.add_argument("--jobs", type=int, default=2, help="runs side by side")
    # One thread: the embedded policy is all per-op overhead; two runs with two threads each on the 2-core
    # machine took 35-50 s per step of configs/death-spiral.yaml, against 5-10 s with one thread each.
    p.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per run")
    p.add_argument(
        "--config", type=Path, default=None, help=f"the experiment's training config (default: the shipped {CONFIG})"
    )
    p.add_argument("--steps", type=int, help="RL steps per run (overrides the config's run.steps)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key for every run (repeatable)",
    )
    p.add_argument("--retriever-url", help="use this retrieval server instead of starting one")
    p.add_argument("--report-only", action="store_true", help="only (re)write summary.json and the figure")
    p.add_argument(
        "--publish",
        type=Path,
        help="also copy the report and each run's metrics.jsonl (as runs/<arm>-seed-<n>.metrics.jsonl) into this "
        "folder, e.g. docs/experiments/death-spiral",
    )
