"""The death-spiral experiment's outputs: `summary.json` (per arm and seed, and per arm) and `death-spiral.png`.

Everything is computed from the runs' own files (metrics.jsonl, the trainer's summary.json), so a report can
be redrawn at any time (`search-trainer death-spiral --out DIR --report-only`). The monitor's verdicts are
recomputed by replaying each run's metrics through `CollapseMonitor`, so the summary always reflects the
monitor in this checkout, not the one that ran.
"""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.death_spiral.criterion import CollapseCriterion
from trainer.death_spiral.phases import phase_markdown
from trainer.death_spiral.rollouts import rollouts_markdown
from trainer.diagnostics.collapse_monitor import HEALTHY, CollapseMonitor
from trainer.diagnostics.metrics_log import read_metrics
from trainer.diagnostics.plots import PHASE_COLOURS as DIAGNOSTICS_PHASE_COLOURS

Records = list[dict[str, Any]]

# (panel title, metric key, y label): each drawn as the mean over seeds with a min-max band, per arm.
PANELS: list[tuple[str, str, str]] = [
    ("Training reward", "reward/mean", "reward"),
    ("Correct-response log-likelihood (token mean)", "likelihood/correct_mean", "log-prob"),
    ("Incorrect-response log-likelihood (token mean)", "likelihood/incorrect_mean", "log-prob"),
    ("Likelihood displacement of correct responses (Σ_t Δ logp)", "likelihood/displacement_correct", "Δ log-prob"),
    ("Gradient norm (pre-clip)", "grad/norm", "norm"),
    ("Entropy", "policy/entropy", "nats/token"),
    ("LLDS activation rate", "llds/activation_rate", "rate"),
    ("One-step probe: share of questions losing likelihood", "likelihood/probe_neg_share", "share"),
]
ARM_LABELS = {
    "grpo": "GRPO",
    "llds": "GRPO+LLDS",
    "llds-0.01": "LLDS λ=0.01",
    "llds-0.1": "LLDS λ=0.1",
    "llds-1": "LLDS λ=1",
    "llds-response": "LLDS response gate",
    "llds-ma": "LLDS-MA",
    "sapo": "GRPO+SAPO",
    "dppo": "DPPO-TV",
}
# The diagnostics plot's phase colours, plus one for healthy steps (the strip shows every step).
PHASE_COLOURS = {HEALTHY: "#cfe8cf", **DIAGNOSTICS_PHASE_COLOURS}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _test_em(run_dir: Path, records: Records) -> dict[str, Any]:
    """Greedy test EM before training, at each periodic evaluation and after training (all questions set)."""
    summary_path = run_dir / "summary.json"
    trainer_summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}

    def overall(rows: list[dict[str, Any]]) -> float | None:
        # The first row is the whole split; the others are its single-/multi-hop parts.
        return float(rows[0]["em"]) if rows else None

    before, after = overall(trainer_summary.get("before", [])), overall(trainer_summary.get("after", []))
    periodic = []
    for record in records:
        ems = [
            v
            for k, v in record.items()
            if k.startswith("heldout/") and k.endswith("/em") and ":" in k and k.count(":") == 1 and _finite(v)
        ]
        if ems:
            periodic.append((int(record["step"]), float(ems[0])))
    during = [em for _, em in periodic] + ([after] if after is not None else [])
    return {
        "test_em_before": before,
        "test_em_during": periodic,
        "best_test_em": max(during) if during else None,
        "final_test_em": after,
    }


def _replayed(records: Records) -> CollapseMonitor:
    monitor = CollapseMonitor()
    monitor.replay(records)
    return monitor


def first_warning_step(records: Records) -> int | None:
    """The first step at which `CollapseMonitor`, replaying the records, raises a warning."""
    return _replayed(records).first_warning_step()


def _phases(records: Records) -> list[tuple[int, str, bool]]:
    """(step, phase, warning) of each record, replayed through `CollapseMonitor`."""
    return [(s.step, s.phase, s.warning) for s in _replayed(records).history]


def _mean_of(records: Records, key: str, steps: slice) -> float | None:
    values = [float(r[key]) for r in records[steps] if _finite(r.get(key))]
    return sum(values) / len(values) if values else None


def run_summary(arm: str, seed: int, run_dir: Path, criterion: CollapseCriterion) -> dict[str, Any]:
    records = read_metrics(run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    collapse = criterion.collapse_step(records)
    warning = first_warning_step(records)
    row: dict[str, Any] = {
        "arm": arm,
        "seed": seed,
        "finished": (run_dir / "summary.json").is_file(),
        "steps_logged": len(records),
        "collapsed": collapse is not None,
        "collapse_step": collapse,
        "first_warning_step": warning,
        "warned_before_collapse": None if collapse is None or warning is None else warning < collapse,
        "reward_first10": _mean_of(records, "reward/mean", slice(0, 10)),
        "reward_last10": _mean_of(records, "reward/mean", slice(-10, None)),
        "correct_loglik_first10": _mean_of(records, "likelihood/correct_mean", slice(0, 10)),
        "correct_loglik_last10": _mean_of(records, "likelihood/correct_mean", slice(-10, None)),
        "probe_neg_share_mean": _mean_of(records, "likelihood/probe_neg_share", slice(None)),
        "llds_activation_mean": _mean_of(records, "llds/activation_rate", slice(None)),
        "searches_first10": _mean_of(records, "env/searches_mean", slice(0, 10)),
        "searches_last10": _mean_of(records, "env/searches_mean", slice(-10, None)),
        # Training steps only (rollout + update), one CPU thread per run: the CPU-hours of the RL part.
        "step_hours": sum(float(r["time/step_s"]) for r in records if _finite(r.get("time/step_s"))) / 3600,
        "run_dir": str(run_dir),
    }
    row.update(_test_em(run_dir, records))
    return row


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if kept else None


def arm_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "runs": len(rows),
        "collapsed": sum(r["collapsed"] for r in rows),
        "median_collapse_step": _median([r["collapse_step"] for r in rows]),
        "warned_before_collapse": sum(bool(r["warned_before_collapse"]) for r in rows),
        "median_best_test_em": _median([r["best_test_em"] for r in rows]),
        "median_final_test_em": _median([r["final_test_em"] for r in rows]),
    }


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def summary_text(rows: list[dict[str, Any]], criterion: CollapseCriterion) -> str:
    header = (
        "| arm | seed | steps | collapsed | collapse step | first warning | test EM before | best | final "
        "| reward first/last 10 | searches first/last 10 |"
    )
    lines = [f"collapse criterion: {criterion.describe()}", "", header, "|" + "---|" * 11]
    for r in rows:
        reward = f"{_fmt(r['reward_first10'])} / {_fmt(r['reward_last10'])}"
        searches = f"{_fmt(r.get('searches_first10'))} / {_fmt(r.get('searches_last10'))}"
        lines.append(
            f"| {ARM_LABELS.get(r['arm'], r['arm'])} | {r['seed']} | {r['steps_logged']} | {_fmt(r['collapsed'])} "
            f"| {_fmt(r['collapse_step'])} "
            f"| {_fmt(r['first_warning_step'])} | {_fmt(r['test_em_before'])} | {_fmt(r['best_test_em'])} "
            f"| {_fmt(r['final_test_em'])} | {reward} | {searches} |"
        )
    return "\n".join(lines)


def write_report(out: Path, runs: Sequence[Any], criterion: CollapseCriterion) -> dict[str, Any]:
    """Write `out/summary.json`, `phases.md`, `rollouts.md` and `death-spiral.png` from the runs (objects
    with arm, seed, out)."""
    rows = [run_summary(r.arm, r.seed, r.out, criterion) for r in runs]
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    summary = {
        "criterion": criterion.as_dict(),
        "runs": rows,
        "arms": {arm: arm_summary([r for r in rows if r["arm"] == arm]) for arm in arms},
        "text": summary_text(rows, criterion),
    }
    records = {(r.arm, r.seed): read_metrics(r.out) if (r.out / "metrics.jsonl").is_file() else [] for r in runs}
    summary["step_hours_total"] = sum(r["step_hours"] for r in rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    labelled = {f"{ARM_LABELS.get(arm, arm)} s{seed}": recs for (arm, seed), recs in records.items() if recs}
    (out / "phases.md").write_text(
        "# Phases of each run against the paper's Fig. 2 (trainer/death_spiral/phases.py)\n\n"
        + phase_markdown(labelled, criterion)
    )
    (out / "rollouts.md").write_text(
        "# What each run's policy does at each test evaluation (trainer/death_spiral/rollouts.py)\n\n"
        + rollouts_markdown({f"{ARM_LABELS.get(r.arm, r.arm)} s{r.seed}": r.out for r in runs})
    )
    plot_experiment(records, rows, out / "death-spiral.png")
    return summary


PUBLISHED_FILES = ("summary.json", "criterion.json", "phases.md", "rollouts.md", "death-spiral.png")


def publish(out: Path, runs: Sequence[Any], dest: Path) -> list[Path]:
    """Copy what a write-up quotes into `dest` (a folder under docs/ that gets committed): the report files
    of `out` and each run's metrics as `dest/runs/<arm>-seed-<n>.metrics.jsonl`, so every figure can be
    redrawn from the repository (`--report-only` needs the run folders; the monitor benchmark reads these).
    Checkpoints, TensorBoard files and eval transcripts stay in `out`: tens of MB a run. Returns the files
    written."""
    (dest / "runs").mkdir(parents=True, exist_ok=True)
    written = []
    for name in PUBLISHED_FILES:
        if (out / name).is_file():
            shutil.copyfile(out / name, dest / name)
            written.append(dest / name)
    for run in runs:
        source = run.out / "metrics.jsonl"
        if source.is_file():
            target = dest / "runs" / f"{run.arm}-seed-{run.seed}.metrics.jsonl"
            shutil.copyfile(source, target)
            written.append(target)
    return written


def _band(runs: list[Records], key: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps, and the mean/min/max over runs of `key` at each step (runs lacking a value there are skipped)."""
    by_step: dict[int, list[float]] = {}
    for records in runs:
        for record in records:
            if _finite(record.get(key)):
                by_step.setdefault(int(record["step"]), []).append(float(record[key]))
    steps = sorted(by_step)
    return (
        steps,
        [statistics.fmean(by_step[s]) for s in steps],
        [min(by_step[s]) for s in steps],
        [max(by_step[s]) for s in steps],
    )


def plot_experiment(records: Mapping[tuple[str, int], Records], rows: list[dict[str, Any]], out_png: Path) -> Path:
    """The experiment's figure: per arm the mean over seeds (line) and min-max (band) of each PANELS metric,
    collapse steps (x) and first warnings (^) on the reward panel, and a strip of each run's monitor phases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    arms = list(dict.fromkeys(arm for arm, _ in records))
    fig, axes = plt.subplots(5, 2, figsize=(14, 16))
    last_step = max((int(r["step"]) for recs in records.values() for r in recs), default=1)
    try:
        for ax, (title, key, ylabel) in zip(axes.flat, PANELS, strict=False):
            drawn = False
            for i, arm in enumerate(arms):
                steps, mean, low, high = _band([recs for (a, _), recs in records.items() if a == arm], key)
                if not steps:
                    continue
                colour = f"C{i}"
                ax.plot(steps, mean, color=colour, linewidth=1.3, label=f"{ARM_LABELS.get(arm, arm)} (mean)")
                ax.fill_between(steps, low, high, color=colour, alpha=0.18, linewidth=0)
                drawn = True
            if key == "reward/mean":
                for i, arm in enumerate(arms):
                    for row in (r for r in rows if r["arm"] == arm):
                        recs = {int(r["step"]): r for r in records[(arm, row["seed"])]}
                        for mark, step in (("x", row["collapse_step"]), ("^", row["first_warning_step"])):
                            if step is not None and _finite(recs.get(step, {}).get(key)):
                                ax.plot(
                                    [step],
                                    [recs[step][key]],
                                    marker=mark,
                                    color=f"C{i}",
                                    markersize=8,
                                    linestyle="none",
                                )
                ax.plot([], [], "kx", label="collapse (criterion)")
                ax.plot([], [], "k^", label="first monitor warning")
            if key == "grad/norm" and drawn:
                ax.set_yscale("log")
            if drawn:
                ax.legend(fontsize=7, loc="best")
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.set_title(title, fontsize=10)
            ax.set_ylabel(ylabel)
            ax.set_xlim(0.5, last_step + 0.5)
            ax.grid(alpha=0.3)
        # Bottom row: each run's monitor phase per step, one strip per run.
        strip = fig.add_subplot(5, 1, 5)
        for ax in axes[-1]:
            ax.remove()
        labels = []
        for y, ((arm, seed), recs) in enumerate(records.items()):
            for step, phase, warning in _phases(recs):
                strip.barh(y, 1, left=step - 0.5, color=PHASE_COLOURS.get(phase, "#eeeeee"), linewidth=0)
                if warning:  # a warning can come from a flag (reward falling, displacement) in any phase
                    strip.plot([step], [y + 0.3], marker="v", color="black", markersize=4, linestyle="none")
            row = next((r for r in rows if r["arm"] == arm and r["seed"] == seed), None)
            if row and row["collapse_step"] is not None:
                strip.plot([row["collapse_step"]], [y], "kx", markersize=8)
            labels.append(f"{ARM_LABELS.get(arm, arm)} s{seed}")
        strip.set_yticks(range(len(labels)), labels, fontsize=8)
        strip.set_xlim(0.5, last_step + 0.5)
        strip.set_xlabel("step")
        strip.set_title(
            "Collapse monitor per run: phase (grey: too few points yet), v: warning, x: collapse by the criterion",
            fontsize=10,
        )
        handles = [Patch(color=c, label=p.replace("_", " ")) for p, c in PHASE_COLOURS.items()]
        strip.legend(handles=handles, fontsize=7, loc="upper left", ncol=4)
        fig.suptitle("Death spiral: plain GRPO vs GRPO+LLDS (mean and min-max over seeds)")
        fig.subplots_adjust(left=0.08, right=0.98, top=0.95, bottom=0.04, hspace=0.3, wspace=0.18)
        out_png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out_png, dpi=90)
    finally:
        plt.close(fig)
    return out_png
