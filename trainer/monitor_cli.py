"""`search-trainer monitor FILE`: the collapse monitor run over a finished (or running) training log.

    search-trainer monitor runs/grpo/metrics.jsonl
    search-trainer monitor verl_metrics.jsonl --json
    search-trainer monitor trl_output/ --format tensorboard --key-map likelihood=train/pos_logp

FILE is our metrics.jsonl (or its run directory), a verl log (file logger JSONL or console output), a TRL
log (JSON lines of log dicts, trainer_state.json, or console output) or TensorBoard event files; `--format`
says which when the guess (`auto`) is wrong. Built-in key maps read each framework's names for the
monitor's signals (trainer.diagnostics.log_readers.KEY_MAPS); `--key-map SIGNAL=KEY` (repeatable) reads a
signal from another key. The monitor is `CollapseMonitor` with its defaults (`--window` changes the long
window); the phases it recomputes ignore any monitor/* values stored in the log.

Resumed runs: a log holding a crashed run and the run resumed from its checkpoint is read, in every
format, as the resumed run: each step's record is the last one written, the abandoned run's records after
the checkpoint are replaced (none of them is judged), and the summary says how many were replaced and
where the seams are (trainer.diagnostics.log_readers on seams; `monitor_log` on what is judged).

Limits (each refused with one line and exit 2, or skipped where said): `--window` at most MAX_WINDOW (500:
Theil-Sen is quadratic in the window); a log line at most 1 MiB (console lines over it are skipped unread),
a JSON document 64 MiB, a TensorBoard record 1 MiB (longer ones skipped unread) and a tensor in one 2^20
declared elements (log_readers.MAX_LINE_BYTES, MAX_DOCUMENT_BYTES, MAX_EVENT_BYTES, MAX_TENSOR_ELEMENTS).

Output with --json, one JSON object per line, each with a "kind":
- first, {"kind": "signals", "file", "format", "signals": {signal: log key}, "missing": [signal, ...],
  "cannot_see": [one sentence per missing signal], "notes": [...], "replaced_steps", "seams"}: what the
  verdicts below rest on; "seams" is [{"step": the resumed run's first step, "replaced": records of the
  abandoned run replaced, "replaced_steps": [first, last] or null, "aligned": false where a restart could
  not be aligned and the monitor starts afresh at "step"}];
- then per step {"kind": "step", "step", "phase", "warning", "reasons", "flags", "likelihood_slope",
  "likelihood_se", "reward_slope", "reward_se"}; "phase" is healthy, stagnation, steady_decay,
  accelerated_collapse, collapsed (reward below half its best, or entropy above half a uniform policy's with
  --vocab-size) or unknown (the monitor is warming up, or the log has no correct-response likelihood); slopes
  are per step (likelihood in the log's unit, nats/token for the built-in maps), null when unknown;
- last, {"kind": "summary", "steps", "first_warning_step", "first_warning", "phase_counts", "last_phase",
  "replaced_steps", "seams"}.
Without --json: the same signal statement, a table of the steps where the phase or warning changes or a
flag is first raised (with the phase's reason), and the summary with one line per seam.

Exit status: 0 (whatever the verdict), 2 for input it cannot read (missing file, unparseable lines, a limit
above, unknown format or signal), with a one-line message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trainer.diagnostics.collapse_monitor import (
    COLLAPSED,
    MAX_WINDOW,
    WARMUP,
    CollapseMonitor,
    MonitorConfig,
    MonitorStatus,
)
from trainer.diagnostics.log_readers import FORMATS, SIGNALS, LogFormatError, LogRun, read_log

UNKNOWN = "unknown"


def monitor_log(
    path: Path | str,
    *,
    fmt: str = "auto",
    key_map: Mapping[str, str] | None = None,
    config: MonitorConfig | None = None,
) -> tuple[LogRun, CollapseMonitor]:
    """Read a training log (any format `read_log` knows) and replay it through a fresh `CollapseMonitor`.

    `monitor.first_warning_step()` is then the first step with a warning (None if none), `monitor.history`
    every step's `MonitorStatus`. Raises LogFormatError for a log it cannot read.

    Seams: the records are one per step, the last written (`read_log`), so an abandoned run's records after
    a resumed run's checkpoint never reach the monitor; the monitor judges the resumed run's own
    trajectory, the steps up to its checkpoint (what it resumed from) and its own after it, as the trainer's
    monitor does when it replays metrics.jsonl on resume. Where a restart could not be aligned (a console
    log without epochs, `run.restarts`), the monitor restarts its windows there instead: the points before
    it are not known to be the resumed run's."""
    run = read_log(path, fmt, key_map)
    monitor = CollapseMonitor(config)
    restarts = set(run.restarts)
    for index, record in enumerate(run.records):
        if index in restarts:  # a restart the log could not align: judged as a new trajectory
            monitor.restart()
        monitor.update(record, announce=False)
    return run, monitor


def public_phase(status: MonitorStatus, run: LogRun) -> str:
    """The phase as the command reports it: warmup, or any phase without a likelihood signal, is unknown;
    collapsed is told from the reward and entropy alone, so it is reported without one."""
    if status.phase == COLLAPSED:
        return COLLAPSED
    if status.phase == WARMUP or "likelihood" not in run.signals:
        return UNKNOWN
    return status.phase


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def signals_object(run: LogRun) -> dict[str, Any]:
    return {
        "kind": "signals",
        "file": str(run.path),
        "format": run.format,
        "signals": dict(run.signals),
        "missing": run.missing,
        "cannot_see": run.blind_spots(),
        "notes": list(run.notes),
        "replaced_steps": run.replaced,
        "seams": [seam.as_json() for seam in run.seams],
    }


def step_object(status: MonitorStatus, run: LogRun) -> dict[str, Any]:
    return {
        "kind": "step",
        "step": status.step,
        "phase": public_phase(status, run),
        "warning": status.warning,
        "reasons": status.reasons,
        "flags": status.flags,
        "likelihood_slope": _finite_or_none(status.likelihood_slope),
        "likelihood_se": _finite_or_none(status.likelihood_se),
        "reward_slope": _finite_or_none(status.reward_slope),
        "reward_se": _finite_or_none(status.reward_se),
    }


def summary_object(monitor: CollapseMonitor, run: LogRun) -> dict[str, Any]:
    first = next((s for s in monitor.history if s.warning), None)
    phases = Counter(public_phase(s, run) for s in monitor.history)
    return {
        "kind": "summary",
        "steps": len(monitor.history),
        "first_warning_step": None if first is None else first.step,
        "first_warning": None if first is None else "; ".join(first.reasons),
        "phase_counts": dict(phases),
        "last_phase": public_phase(monitor.history[-1], run) if monitor.history else UNKNOWN,
        "replaced_steps": run.replaced,
        "seams": [seam.as_json() for seam in run.seams],
    }


def _print_json(run: LogRun, monitor: CollapseMonitor) -> None:
    print(json.dumps(signals_object(run)))
    for status in monitor.history:
        print(json.dumps(step_object(status, run)))
    print(json.dumps(summary_object(monitor, run)))


def _print_table(run: LogRun, monitor: CollapseMonitor) -> None:
    print(f"{run.path} ({run.format}, {len(run.records)} steps)")
    print("signals: " + (", ".join(f"{s} <- {k}" for s, k in run.signals.items()) or "none"))
    for sentence in run.blind_spots():
        print(f"missing: {sentence}")
    for note in run.notes:
        print(f"note: {note}")
    print(f"\n{'step':>7}  {'phase':<21} {'warn':<4}  {'new flags':<26} why (rows where phase or warning change)")
    previous: tuple[str, bool] | None = None
    seen: set[str] = set()
    for status in monitor.history:
        key = (public_phase(status, run), status.warning)
        new_flags = [f for f in status.flags if f not in seen]
        seen.update(status.flags)
        if key != previous or new_flags:
            why = status.reasons[0] if status.reasons else ""
            why = why if len(why) <= 110 else why[:107] + "..."
            warn = "yes" if status.warning else ""
            print(f"{status.step:>7}  {key[0]:<21} {warn:<4}  {','.join(new_flags):<26} {why}")
        previous = key
    summary = summary_object(monitor, run)
    counts = ", ".join(f"{phase} {n}" for phase, n in summary["phase_counts"].items())
    first = summary["first_warning_step"]
    print(f"\nphases: {counts}")
    for seam in run.seams:
        print(f"seam at step {seam.step}: {seam.describe()}")
    print("first warning: " + ("none" if first is None else f"step {first}: {summary['first_warning']}"))


def _parse_key_map(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        signal, sep, key = pair.partition("=")
        if not sep or not signal or not key:
            raise LogFormatError(f"--key-map {pair!r}: expected SIGNAL=KEY (signals: {', '.join(SIGNALS)})")
        out[signal.strip()] = key.strip()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="search-trainer monitor",
        description="Run the LLD collapse monitor over a training log: phase and warning per step.",
        epilog=f"signals: {', '.join(SIGNALS)}. Exit status 2 for input that cannot be read.",
    )
    p.add_argument("file", type=Path, help="metrics.jsonl / run dir, verl or TRL log, TensorBoard event file or dir")
    p.add_argument("--json", action="store_true", help="one JSON object per line: signals, steps, summary")
    p.add_argument("--key-map", action="append", default=[], metavar="SIGNAL=KEY", help="read SIGNAL from KEY")
    p.add_argument("--format", default="auto", choices=FORMATS, help="log format (default: guess)")
    p.add_argument(
        "--window", type=int, help=f"points in the monitor's long trend window (default 50, at most {MAX_WINDOW})"
    )
    p.add_argument(
        "--vocab-size",
        type=int,
        help="the policy's vocabulary size: a step whose entropy is above half of ln(size) is called collapsed",
    )
    return p


def monitor_main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.getLogger("tensorboard").setLevel(logging.WARNING)  # its INFO lines would interleave with ours
    try:
        if args.vocab_size is not None and args.vocab_size < 2:
            raise ValueError(f"--vocab-size {args.vocab_size}: must be >= 2")
        config = MonitorConfig(
            **({} if args.window is None else {"window": args.window}),
            entropy_uniform=None if args.vocab_size is None else math.log(args.vocab_size),
        )
    except ValueError as err:
        print(f"search-trainer monitor: {err}", file=sys.stderr)
        return 2
    try:
        run, monitor = monitor_log(args.file, fmt=args.format, key_map=_parse_key_map(args.key_map), config=config)
    except LogFormatError as err:
        print(f"search-trainer monitor: {err}", file=sys.stderr)
        return 2
    except (RecursionError, MemoryError, ArithmeticError, UnicodeError, OSError) as err:
        # A last net under the readers' own checks: whatever a file does, one line and exit 2.
        print(f"search-trainer monitor: {args.file}: cannot read it ({type(err).__name__}: {err})", file=sys.stderr)
        return 2
    try:
        if args.json:
            _print_json(run, monitor)
        else:
            _print_table(run, monitor)
    except BrokenPipeError:  # `... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit-time flush stays quiet
    return 0


if __name__ == "__main__":
    sys.exit(monitor_main())
