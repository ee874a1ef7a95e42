"""The diagnostics figure: the curves that show the LLD death spiral coming, for one run or several overlaid.

Panels: reward/EM, correct vs incorrect response log-likelihood, likelihood displacement across updates,
gradient norm, LLDS activity, entropy. Steps the CollapseMonitor flagged ("monitor/phase" in the records)
are shaded in every panel: yellow stagnation, orange steady decay, red accelerated collapse. With
`compare`, each run gets one colour (GRPO vs GRPO+LLDS, say) and the phases of the first run are shaded.
Within a panel, line style tells the metrics apart. Missing keys leave gaps or an empty panel.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trainer.diagnostics.collapse_monitor import ACCELERATED, DECAY, STAGNATION
from trainer.diagnostics.metrics_log import read_metrics

Records = list[dict[str, Any]]

# (title, y-label, [(metric key, legend label, line style)], log-scale y)
PANELS: list[tuple[str, str, list[tuple[str, str, str]], bool]] = [
    ("Reward", "reward / EM", [("reward/mean", "reward", "-"), ("eval/em", "EM", "--")], False),
    (
        "Response log-likelihood (token mean)",
        "log-prob",
        [("likelihood/correct_mean", "correct", "-"), ("likelihood/incorrect_mean", "incorrect", "--")],
        False,
    ),
    (
        "Likelihood displacement across update (Σ_t Δ logp)",
        "Δ log-prob",
        [
            ("likelihood/displacement_correct", "correct", "-"),
            ("likelihood/displacement_incorrect", "incorrect", "--"),
        ],
        False,
    ),
    ("Gradient norm (pre-clip)", "norm", [("grad/norm", "mean", "-"), ("grad/norm_max", "max", ":")], True),
    (
        "LLDS activity",
        "rate / magnitude",
        [("llds/activation_rate", "activation rate", "-"), ("llds/magnitude", "magnitude", "--")],
        False,
    ),
    ("Entropy", "nats/token", [("policy/entropy", "entropy", "-")], False),
]
PHASE_COLOURS = {STAGNATION: "#f2d024", DECAY: "#f28c28", ACCELERATED: "#d62728"}


def _load(metrics: Records | Path | str) -> Records:
    return read_metrics(metrics) if isinstance(metrics, Path | str) else list(metrics)


def _run_name(metrics: Records | Path | str) -> str:
    """A run's legend name: its directory's name when it came from a file, else "run"."""
    if not isinstance(metrics, Path | str):
        return "run"
    path = Path(metrics)
    return (path if path.is_dir() else path.parent).resolve().name or "run"


def _series(records: Records, key: str) -> tuple[list[float], list[float]]:
    """Steps and values of `key`, NaN where a record lacks a finite value (so the line shows a gap)."""
    steps, values = [], []
    for i, record in enumerate(records):
        value = record.get(key)
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        steps.append(float(record.get("step", i)))
        values.append(float(value) if ok else math.nan)
    return steps, values


def _phase_spans(records: Records) -> list[tuple[float, float, str]]:
    """Contiguous (start, end, phase) runs of shaded phases; each span covers its steps +/- half a step."""
    spans: list[tuple[float, float, str]] = []
    for i, record in enumerate(records):
        phase, step = record.get("monitor/phase"), float(record.get("step", i))
        if phase not in PHASE_COLOURS:
            continue
        if spans and spans[-1][2] == phase and step - spans[-1][1] <= 1.5:
            spans[-1] = (spans[-1][0], step, phase)
        else:
            spans.append((step, step, phase))
    return [(start - 0.5, end + 0.5, phase) for start, end, phase in spans]


def plot_metrics(
    metrics: Records | Path | str,
    out_png: Path | str,
    compare: dict[str, Records | Path | str] | None = None,
    *,
    label: str | None = None,
    title: str | None = None,
) -> Path:
    """Draw the diagnostics PNG for `metrics` (records or a metrics.jsonl), optionally overlaying the runs
    in `compare` (name -> records or path). Returns `out_png`."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display is needed or wanted on a training node
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    primary = _load(metrics)
    if label is None:
        label = _run_name(metrics)
    runs = [(label, primary)] + [(name, _load(other)) for name, other in (compare or {}).items()]
    overlay = len(runs) > 1

    fig, axes = plt.subplots(3, 2, figsize=(14, 11), sharex=True)
    try:
        spans = _phase_spans(primary)
        for ax, (panel_title, ylabel, keys, log_y) in zip(axes.flat, PANELS, strict=True):
            drawn = False
            for run_index, (run_name, records) in enumerate(runs):
                colours = [f"C{run_index}"] * len(keys) if overlay else [f"C{i}" for i in range(len(keys))]
                for (key, key_label, style), colour in zip(keys, colours, strict=True):
                    steps, values = _series(records, key)
                    if all(math.isnan(v) for v in values):
                        continue
                    name = f"{run_name}: {key_label}" if overlay else key_label
                    ax.plot(steps, values, linestyle=style, color=colour, linewidth=1.2, label=name)
                    drawn = True
            for start, end, phase in spans:
                ax.axvspan(start, end, color=PHASE_COLOURS[phase], alpha=0.15, linewidth=0)
            if log_y and drawn:
                ax.set_yscale("log")
            if drawn:
                ax.legend(fontsize=7, loc="best")
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
            ax.set_title(panel_title, fontsize=10)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        for ax in axes[-1]:
            ax.set_xlabel("step")
        if spans:
            present = [p for p in PHASE_COLOURS if any(s[2] == p for s in spans)]
            handles = [Patch(color=PHASE_COLOURS[p], alpha=0.4, label=p.replace("_", " ")) for p in present]
            fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, title=f"{label} phases")
        fig.suptitle(title or ("LLD diagnostics: " + " vs ".join(name for name, _ in runs)))
        # Fixed margins: tight_layout measures every text artist and doubles the drawing time.
        fig.subplots_adjust(left=0.06, right=0.98, top=0.94, bottom=0.1 if spans else 0.06, hspace=0.25, wspace=0.15)
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return out


def _name_path(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def plot_main(argv: Sequence[str] | None = None) -> int:
    """`search-trainer plot METRICS.jsonl [--out PNG] [--compare NAME=PATH ...] [--label NAME] [--title T]`."""
    parser = argparse.ArgumentParser(prog="search-trainer plot", description="Draw the LLD diagnostics figure.")
    parser.add_argument("metrics", type=Path, help="a metrics.jsonl, or the run directory holding one")
    parser.add_argument("--out", type=Path, help="output PNG (default: diagnostics.png next to the metrics)")
    parser.add_argument(
        "--compare", type=_name_path, nargs="+", default=[], metavar="NAME=PATH", help="runs to overlay"
    )
    parser.add_argument("--label", help="legend name of the main run (default: its directory name)")
    parser.add_argument("--title", help="figure title")
    args = parser.parse_args(argv)
    if not args.metrics.exists():
        parser.error(f"{args.metrics} does not exist")
    run_dir = args.metrics if args.metrics.is_dir() else args.metrics.parent
    out = args.out or run_dir / "diagnostics.png"
    compare = dict(args.compare) or None
    path = plot_metrics(args.metrics, out, compare, label=args.label, title=args.title)
    print(path)
    return 0
