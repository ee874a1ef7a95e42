"""How far the collapse monitor can be trusted: false warnings on healthy runs and the lead of its first
warning over the reward's fall on collapsing ones, for the monitor as it was (read from git at OLD_REV) and
as it is now. Seeded and CPU-only (~1.5 minutes on one core).

    python benchmarks/collapse_monitor.py [--seeds 5] [--healthy FILE ...] [--collapsing FILE ...]
                                          [--out docs/benchmarks/collapse-monitor.txt]

Synthetic series are shaped like this project's runs: 16 questions x 5 rollouts a step, so the correct-
response likelihood (token mean, nats) carries batch noise of sd 0.05-0.2 and is NaN on ~3% of steps, the
reward is a mean of 80 Bernoulli draws, the grad norm is log-normal and the entropy wobbles. Healthy
families (240 steps each): flat; slowly rising; converged (flat likelihood, reward still creeping up);
wandering (a slow AR(1) drift on top of the noise); heavy-tailed (Student-t(3) noise). Collapsing series
(260 steps) follow the paper's three phases (arXiv 2512.04220 Fig. 2): I steps 0-79 likelihood flat while
reward rises; II steps 80-169 likelihood falls by `decay` nats/token/step while reward still rises and the
grad norm is stable; III from step 170 the likelihood drop accelerates, grad norm spikes, entropy surges and
the reward falls from step 180. Real files (`--healthy`, `--collapsing`) are read with
trainer.diagnostics.log_readers (our metrics.jsonl, verl, TRL, TensorBoard; the format is detected).
Every synthetic run is measured twice: with all signals, and without the displacement share (as in a verl
or TRL log), which isolates the likelihood-trend rules.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from trainer.death_spiral.criterion import CollapseCriterion  # noqa: E402
from trainer.diagnostics.collapse_monitor import WARNING_FLAGS, WARNING_PHASES, CollapseMonitor  # noqa: E402
from trainer.diagnostics.log_readers import LogFormatError, read_log  # noqa: E402

#: the branch's first commit: the monitor as it was before the noise-aware rewrite
OLD_REV = "920efeb"
HEALTHY_STEPS, COLLAPSE_STEPS = 240, 260
PHASE2_START, PHASE3_START, REWARD_TURN = 80, 170, 180
SMOOTH = 10  # points in the trailing mean that defines "reward falls"
REWARD_FALLS = (
    f"reward falls = the first step where the trailing mean of the last {SMOOTH} rewards is below half its\n"
    f"running best (the best of that trailing mean so far, from the {SMOOTH}th reward on)"
)

Record = dict[str, Any]


# ---------------------------------------------------------------- synthetic runs


def _run_label(path: Path) -> str:
    """A real run's row label: its folder and file name, cut from the left to fit the column."""
    name = f"{path.parent.name}/{path.name}".removesuffix(".metrics.jsonl").removesuffix(".jsonl")
    return name[-27:]


def _likelihood_noise(rng: random.Random, sd: float, heavy: bool) -> float:
    if not heavy:
        return rng.gauss(0, sd)
    # Student-t(3) scaled to sd (its variance is 3): a few batches far off, as with 2-3 correct responses
    t = rng.gauss(0, 1) / math.sqrt(sum(rng.gauss(0, 1) ** 2 for _ in range(3)) / 3)
    return sd * t / math.sqrt(3)


def _reward_draw(rng: random.Random, p: float, n: int = 80) -> float:
    p = min(max(p, 0.0), 1.0)
    return sum(rng.random() < p for _ in range(n)) / n


def _record(
    rng: random.Random, step: int, lik: float, inc_gap: float, reward: float, sd: float, heavy: bool = False
) -> Record:
    missing = rng.random() < 0.03  # no correct response in the batch
    share = math.nan if missing else min(max(rng.gauss(0.35, 0.15), 0.0), 1.0)
    return {
        "step": step,
        "likelihood/correct_mean": math.nan if missing else lik + _likelihood_noise(rng, sd, heavy),
        "likelihood/incorrect_mean": lik + inc_gap + rng.gauss(0, sd / 2),
        "reward/mean": _reward_draw(rng, reward),
        "likelihood/displacement_correct_neg_share": share,
    }


def healthy_series(family: str, sd: float, seed: int, n: int = HEALTHY_STEPS) -> list[Record]:
    rng = random.Random(f"{family}-{sd}-{seed}")
    drift_l = drift_r = 0.0
    out = []
    for s in range(n):
        progress = 1 - math.exp(-s / 80)
        lik, reward = -0.40, 0.30
        if family == "rising":
            lik, reward = -0.70 + 0.35 * progress, 0.10 + 0.30 * progress
        elif family == "converged":
            lik, reward = -0.30, 0.35 + 0.0005 * s
        elif family == "wandering":
            # the policy moves: a slow AR(1) drift (correlation 0.95/step, sd 0.05 nats, 0.02 reward)
            drift_l = 0.95 * drift_l + rng.gauss(0, 0.05 * math.sqrt(1 - 0.95**2))
            drift_r = 0.95 * drift_r + rng.gauss(0, 0.02 * math.sqrt(1 - 0.95**2))
            lik, reward = lik + drift_l, reward + drift_r
        record = _record(rng, s, lik, 0.05, reward, sd, heavy=family == "heavy-tailed")
        record["grad/norm"] = 0.3 * math.exp(rng.gauss(0, 0.25))
        record["policy/entropy"] = 0.5 + rng.gauss(0, 0.02)
        out.append(record)
    return out


def collapse_series(sd: float, decay: float, seed: int, n: int = COLLAPSE_STEPS) -> list[Record]:
    rng = random.Random(f"collapse-{sd}-{decay}-{seed}")
    out = []
    for s in range(n):
        lik = -0.35
        if s >= PHASE2_START:
            lik -= decay * (s - PHASE2_START)
        if s >= PHASE3_START:
            lik -= 4e-4 * (s - PHASE3_START) ** 2  # 0.03 nats/token/step of extra fall 40 steps in
        reward = 0.15 + 0.30 * min(s, REWARD_TURN) / REWARD_TURN
        if s > REWARD_TURN:
            reward *= math.exp(-(s - REWARD_TURN) / 20)
        inc_gap = 0.05 - 0.15 * min(max(s - PHASE2_START, 0), 90) / 90  # crosses below correct mid-phase II
        record = _record(rng, s, lik, inc_gap, reward, sd)
        share = 0.35 + 0.25 * min(max(s - PHASE2_START, 0), 90) / 90 + (0.1 if s >= PHASE3_START else 0.0)
        if not math.isnan(record["likelihood/displacement_correct_neg_share"]):
            record["likelihood/displacement_correct_neg_share"] = min(max(rng.gauss(share, 0.15), 0.0), 1.0)
        grad = 0.3 * math.exp(rng.gauss(0, 0.25))
        if s >= PHASE3_START + 10:
            grad *= 1 + 0.3 * (s - PHASE3_START - 10) * (1 + rng.random())
        record["grad/norm"] = grad
        entropy = 0.5 + 0.0003 * s + (0.01 * (s - PHASE3_START) if s >= PHASE3_START else 0.0)
        record["policy/entropy"] = entropy + rng.gauss(0, 0.02)
        out.append(record)
    return out


# ---------------------------------------------------------------- measures


def reward_falls_step(records: list[Record]) -> int | None:
    """See REWARD_FALLS; None when it never happens (or the best is not positive)."""
    rewards: list[float] = []
    best = -math.inf
    for r in records:
        value = r.get("reward/mean")
        if not isinstance(value, int | float) or not math.isfinite(value):
            continue
        rewards.append(float(value))
        if len(rewards) < SMOOTH:
            continue
        smooth = statistics.fmean(rewards[-SMOOTH:])
        best = max(best, smooth)
        if best > 0 and smooth < 0.5 * best:
            return int(r["step"])
    return None


@dataclass
class Outcome:
    steps: int
    warned: list[int]  # positions (0, 1, ...) of the steps with warning set
    first_cause: str | None = None  # the phase or flag that set the first warning

    @property
    def onsets(self) -> int:
        """Warning episodes: steps where warning turns on."""
        previous, count = None, 0
        warned = set(self.warned)
        for step in range(self.steps):
            on = step in warned
            count += on and not previous
            previous = on
        return count


def run_monitor(factory: Callable[[], Any], records: list[Record]) -> Outcome:
    monitor = factory()
    for record in records:
        monitor.update(dict(record), announce=False)
    steps = [s.step for s in monitor.history]
    # onsets count over the ordinal positions, so sparse logs (every k steps) count episodes, not gaps
    position = {step: i for i, step in enumerate(steps)}
    first = next((s for s in monitor.history if s.warning), None)
    cause = None
    if first is not None:
        causes = [first.phase] if first.phase in WARNING_PHASES else []
        causes += [f for f in first.flags if f in WARNING_FLAGS]
        cause = "+".join(causes) or first.phase
    return Outcome(len(steps), [position[s.step] for s in monitor.history if s.warning], cause)


def load_old_monitor(rev: str) -> ModuleType | None:
    """trainer/diagnostics/collapse_monitor.py as it was at `rev`, imported under another name."""
    try:
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:trainer/diagnostics/collapse_monitor.py"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"old monitor unavailable ({err}): only the new one is measured", file=sys.stderr)
        return None
    spec = importlib.util.spec_from_loader("old_collapse_monitor", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    exec(compile(source, f"{rev}:collapse_monitor.py", "exec"), module.__dict__)  # noqa: S102 - our own file
    return module


# ---------------------------------------------------------------- report

DISPLACEMENT = "likelihood/displacement_correct_neg_share"
FAMILIES = ("flat", "rising", "converged", "wandering", "heavy-tailed")
NOISES = (0.05, 0.1, 0.15, 0.2)
DECAYS = (0.002, 0.004)
Emit = Callable[..., None]


class Tally:
    """Healthy runs: warning episodes, warned steps and steps."""

    def __init__(self) -> None:
        self.onsets = self.warned = self.steps = 0

    def add(self, outcome: Outcome) -> None:
        self.onsets += outcome.onsets
        self.warned += len(outcome.warned)
        self.steps += outcome.steps

    def cell(self) -> str:
        rate = f"{100 * self.onsets / self.steps:.2f}" if self.steps else "-"
        share = 100 * self.warned / self.steps if self.steps else 0.0
        return f"{rate:>16} ({share:4.1f}%)  "


class Leads:
    """Collapsing runs: leads of the first warning over the reward's fall, early and missed counts."""

    def __init__(self) -> None:
        self.leads: list[int] = []
        self.early = self.missed = self.runs = 0
        self.causes: Counter[str] = Counter()

    def add(self, outcome: Outcome, falls: int) -> None:
        first = outcome.warned[0] if outcome.warned else None
        self.runs += 1
        self.early += first is not None and first < PHASE2_START
        self.missed += first is None or first >= falls
        self.causes[outcome.first_cause or "none"] += 1
        if first is not None and first < falls:
            self.leads.append(falls - first)

    def cell(self) -> str:
        lead = "-"
        if self.leads:
            lead = f"{statistics.median(self.leads):+.0f} [{min(self.leads):+d}, {max(self.leads):+d}]"
        return f"{lead:>20}  {self.early:>2}/{self.missed:<2} of {self.runs:<2}"


def _without(records: list[Record], key: str | None) -> list[Record]:
    return records if key is None else [{k: v for k, v in r.items() if k != key} for r in records]


def healthy_block(monitors: dict[str, Callable[[], Any]], seeds: int, drop: str | None, emit: Emit, rows: bool) -> None:
    names = list(monitors)
    emit(f"{'healthy series':<28}{'steps':>7}" + "".join(f"{n:>26}" for n in names))
    emit(f"{'':<35}" + "".join(f"{'false/100 st (warned %)':>26}" for _ in names))
    totals = {n: Tally() for n in names}
    for family in FAMILIES:
        for sd in NOISES:
            row = {n: Tally() for n in names}
            for seed in range(seeds):
                series = _without(healthy_series(family, sd, seed), drop)
                for name in names:
                    outcome = run_monitor(monitors[name], series)
                    row[name].add(outcome)
                    totals[name].add(outcome)
            if rows:
                label = f"{family} sd={sd:g}"
                emit(f"{label:<28}{row[names[0]].steps:>7}  " + "".join(t.cell() for t in row.values()))
    emit(f"{'all synthetic healthy':<28}{totals[names[0]].steps:>7}  " + "".join(t.cell() for t in totals.values()))


def collapse_block(
    monitors: dict[str, Callable[[], Any]], seeds: int, drop: str | None, emit: Emit, rows: bool
) -> None:
    names = list(monitors)
    emit(f"{'collapsing series':<28}{'falls':>7}" + "".join(f"{n:>34}" for n in names))
    emit(f"{'':<35}" + "".join(f"{'lead  early/missed of N':>34}" for _ in names))
    totals = {n: Leads() for n in names}
    for sd in NOISES:
        for decay in DECAYS:
            row = {n: Leads() for n in names}
            falls_steps = []
            for seed in range(seeds):
                series = _without(collapse_series(sd, decay, seed), drop)
                falls = reward_falls_step(series)
                assert falls is not None
                falls_steps.append(falls)
                for name in names:
                    outcome = run_monitor(monitors[name], series)
                    row[name].add(outcome, falls)
                    totals[name].add(outcome, falls)
            if rows:
                label = f"sd={sd:g} decay={decay:g}"
                cells = "".join(t.cell() for t in row.values())
                emit(f"{label:<28}{statistics.median(falls_steps):>7.0f}  {cells}")
    emit(f"{'all synthetic collapsing':<28}{'':>7}  " + "".join(t.cell() for t in totals.values()))
    emit("what set the first warning:")
    for name, tally in totals.items():
        emit(f"  {name}: " + ", ".join(f"{cause} {count}" for cause, count in tally.causes.most_common()))


def real_files(monitors: dict[str, Callable[[], Any]], healthy: list[Path], collapsing: list[Path], emit: Emit) -> None:
    names = list(monitors)
    if healthy:
        emit(f"{'real healthy runs':<28}{'steps':>7}" + "".join(f"{n:>26}" for n in names))
        for path in healthy:
            run = read_log(path)
            tallies = []
            for name in names:
                tally = Tally()
                tally.add(run_monitor(monitors[name], run.records))
                tallies.append(tally)
            emit(f"{_run_label(path):<28}{len(run.records):>7}  " + "".join(t.cell() for t in tallies))
        emit()
    if collapsing:
        # Real runs are judged against the death-spiral experiment's own criterion (declared before its runs):
        # the lead is collapse step - first warning.
        emit(f"{'real collapsing runs':<28}{'collapse':>9}" + "".join(f"{n:>34}" for n in names))
        emit(f"{'':<37}" + "".join(f"{'first warning (lead)':>34}" for _ in names))
        criterion = CollapseCriterion()
        for path in collapsing:
            run = read_log(path)
            collapse = criterion.collapse_step(run.records)
            cells = ""
            for name in names:
                monitor = monitors[name]()
                for record in run.records:
                    monitor.update(dict(record), announce=False)
                first = next((s.step for s in monitor.history if s.warning), None)
                lead = "" if first is None or collapse is None else f" ({collapse - first:+d})"
                cells += f"{f'{first}{lead}':>34}"
            emit(f"{_run_label(path):<28}{str(collapse):>9}  {cells}")
        emit(f"collapse = {criterion.describe()}")
        emit()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="collapse monitor: false warnings and lead times, old vs new")
    p.add_argument("--seeds", type=int, default=5, help="seeds per synthetic configuration")
    p.add_argument("--healthy", nargs="*", type=Path, default=[], metavar="FILE", help="real healthy runs")
    p.add_argument("--collapsing", nargs="*", type=Path, default=[], metavar="FILE", help="real collapsing runs")
    p.add_argument("--old-rev", default=OLD_REV, help="git revision of the old monitor")
    p.add_argument("--out", type=Path, default=ROOT / "docs/benchmarks/collapse-monitor.txt")
    args = p.parse_args(argv)
    began = time.perf_counter()

    monitors: dict[str, Callable[[], Any]] = {}
    old = load_old_monitor(args.old_rev)
    if old is not None:
        monitors[f"old w=20 ({args.old_rev})"] = lambda: old.CollapseMonitor()
        monitors["old w=10 (trainer cfg)"] = lambda: old.CollapseMonitor(old.MonitorConfig(window=10))
    monitors["new"] = CollapseMonitor
    lines: list[str] = []

    def emit(text: str = "") -> None:
        text = text.rstrip()
        print(text, flush=True)
        lines.append(text)

    emit(f"collapse monitor benchmark, {args.seeds} seeds per configuration. Monitors: old w=20 = the monitor at")
    emit(f"{args.old_rev} with its MonitorConfig defaults; old w=10 = the same as the trainer ran it")
    emit("(diagnostics.monitor_window=10); new = this one with its defaults.")
    emit("Healthy families (240 steps): flat; rising (likelihood and reward rise and level off); converged (flat")
    emit("likelihood, reward still creeping up); wandering (a slow real drift, AR(1) 0.95/step, sd 0.05 nats, that")
    emit("falls for tens of steps and comes back: the hardest case); heavy-tailed (Student-t(3) batch noise).")
    emit("sd = the likelihood's batch noise (nats/token); ~3% of steps have no likelihood (NaN).")
    emit("false = warning episodes (steps where `warning` turns on) per 100 steps; warned = % of steps with")
    emit("`warning` set. Goal: <= 1 false warning per 100 steps.")
    emit()
    try:
        real_files(monitors, args.healthy, args.collapsing, emit)
    except LogFormatError as err:
        print(f"collapse_monitor benchmark: {err}", file=sys.stderr)
        return 2
    healthy_block(monitors, args.seeds, None, emit, rows=True)
    emit()
    emit(f"Collapsing series (260 steps): phase II from step {PHASE2_START} (likelihood falls by `decay`")
    emit(f"nats/token/step), phase III from {PHASE3_START}, reward turns at step {REWARD_TURN}.")
    emit(f"{REWARD_FALLS}.")
    emit("lead = reward-falls step - first warning step (positive: warned before the fall), median [min, max]")
    emit(f"over the runs warned before the fall; early = runs first warned before phase II (step {PHASE2_START}):")
    emit("a false warning, whose lead means nothing; missed = runs not warned before the reward fell.")
    emit()
    collapse_block(monitors, args.seeds, None, emit, rows=True)
    emit()
    emit(f"The same runs without the displacement share ({DISPLACEMENT}):")
    emit("likelihood trend, reward, grad norm and entropy only, as in a log that lacks it (verl, TRL).")
    emit()
    healthy_block(monitors, args.seeds, DISPLACEMENT, emit, rows=False)
    collapse_block(monitors, args.seeds, DISPLACEMENT, emit, rows=False)
    emit()
    emit(f"({time.perf_counter() - began:.0f} s)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/collapse_monitor.py " + " ".join(argv if argv is not None else sys.argv[1:])
    args.out.write_text(f"$ {command.strip()}\n" + "\n".join(lines[:-1]) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
