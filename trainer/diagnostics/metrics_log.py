"""Per-step metrics on disk: one JSON line per step in `metrics.jsonl`, and TensorBoard scalars when available.

Resuming a run reopens the same file and skips steps already present, so a run restarted from an older
checkpoint does not duplicate the steps it replays (the first record of a step wins; TensorBoard gets the
same skip, so its curves stay single-valued). A line cut short by a crash is dropped on reopen.
Non-finite floats are written as null: strict JSON, readable by jq and pandas.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
REPLACED_FILE = "metrics.replaced.jsonl"  # records a resumed run replaced (MetricsLogger.set_aside_after)

_warned_no_tensorboard = False


def _make_writer(log_dir: Path) -> Any | None:
    """A torch SummaryWriter, or None (warning once per process) when tensorboard is not installed."""
    global _warned_no_tensorboard
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError when the tensorboard package is missing
        if not _warned_no_tensorboard:
            log.warning("tensorboard is not installed: metrics go to %s only", METRICS_FILE)
            _warned_no_tensorboard = True
        return None
    return SummaryWriter(log_dir=str(log_dir))


def _json_value(value: Any) -> Any:
    if hasattr(value, "item") and callable(value.item):  # torch / numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_metrics(path: Path | str) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (or of the run directory holding one), in file order.
    Malformed lines (a crash mid-write) are skipped with a warning."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    records: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("%s:%d: skipping a malformed metrics line", path, number)
    return records


class MetricsLogger:
    """Appends each step's metrics to `run_dir/metrics.jsonl` and, if possible, to TensorBoard
    (`run_dir/tensorboard`). Use as a context manager or call `close()`."""

    def __init__(self, run_dir: Path | str, *, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        self.steps: set[int] = set()
        if self.path.exists():
            self._drop_partial_line()
            self.steps = {int(r["step"]) for r in read_metrics(self.path) if isinstance(r.get("step"), int)}
        self._file = self.path.open("a", encoding="utf-8")
        self._writer = _make_writer(self.run_dir / TENSORBOARD_DIR) if tensorboard else None

    def _drop_partial_line(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            # The last line was cut by a crash; appending after it would corrupt the next record too.
            with self.path.open("r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def set_aside_after(self, step: int) -> int:
        """Move the records of steps after `step` (what a crashed run logged past the checkpoint a resumed
        run starts from) out of metrics.jsonl into metrics.replaced.jsonl (appended, each record marked
        with ``replaced_by_resume_from``), so the file reads as the one run that goes on from `step` and
        the resumed run's own records are written for those steps. Returns how many were moved."""
        records = read_metrics(self.path) if self.path.exists() else []
        after = [r for r in records if isinstance(r.get("step"), int) and r["step"] > step]
        if not after:
            return 0
        kept = [r for r in records if r not in after]
        self._file.close()
        with (self.run_dir / REPLACED_FILE).open("a", encoding="utf-8") as aside:
            for record in after:
                aside.write(json.dumps({**record, "replaced_by_resume_from": step}, allow_nan=False) + "\n")
        staging = self.path.with_suffix(".jsonl.tmp")
        staging.write_text("".join(json.dumps(r, allow_nan=False) + "\n" for r in kept), encoding="utf-8")
        staging.replace(self.path)
        self.steps = {int(r["step"]) for r in kept if isinstance(r.get("step"), int)}
        self._file = self.path.open("a", encoding="utf-8")
        return len(after)

    @property
    def tensorboard_enabled(self) -> bool:
        return self._writer is not None

    def log(self, metrics: Mapping[str, Any], step: int | None = None) -> bool:
        """Write one step's record; False (and nothing written) when the step is already in the file.
        The step comes from `step` or `metrics["step"]`."""
        step = int(metrics["step"] if step is None else step)
        if step in self.steps:
            return False
        record = {"step": step, "wall_time": time.time()}
        record.update({k: _json_value(v) for k, v in metrics.items() if k != "step"})
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        self.steps.add(step)
        if self._writer is not None:
            for key, value in record.items():
                # Only numbers are scalars: phase names and other strings stay in the JSONL.
                if key not in ("step", "wall_time") and isinstance(value, int | float):
                    self._writer.add_scalar(key, float(value), global_step=step, walltime=record["wall_time"])
            self._writer.flush()
        return True

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
