"""The collapse criterion of the death-spiral experiment, declared before any run and written into its output.

A run has collapsed at step s when its training reward, smoothed by a trailing mean over `smooth` steps,
stays below `fraction` x its running best (the best smoothed value seen up to that step) for `patience`
consecutive steps starting at s; the running best only counts once `min_steps` smoothed values exist,
so the first noisy steps cannot set it. This is the "reward below half its running best for 10
consecutive steps" of issue 10, with the trailing mean so that one unlucky batch cannot start a run of
low steps. A collapse that begins too late to last `patience` steps before the run ends is not counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class CollapseCriterion:
    key: str = "reward/mean"
    smooth: int = 5  # trailing mean over this many steps (steps with no value are skipped)
    fraction: float = 0.5  # collapsed while below fraction x running best
    patience: int = 10  # ... for this many consecutive steps
    min_steps: int = 5  # smoothed values needed before the running best counts

    def __post_init__(self) -> None:
        if self.smooth < 1 or self.patience < 1 or self.min_steps < 1:
            raise ValueError("smooth, patience and min_steps must be >= 1")
        if not 0 < self.fraction < 1:
            raise ValueError(f"fraction={self.fraction!r} must be in (0, 1)")

    def describe(self) -> str:
        return (
            f"collapsed at the first step s where the {self.smooth}-step trailing mean of {self.key} stays below "
            f"{self.fraction:g} x its running best (best so far, counted from the {self.min_steps}th smoothed "
            f"value) for {self.patience} consecutive steps starting at s"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"text": self.describe()}

    def smoothed(self, records: Sequence[Mapping[str, Any]]) -> list[tuple[int, float]]:
        """(step, trailing mean) for every step that has a finite value of `key`."""
        points = [(int(r["step"]), float(r[self.key])) for r in records if _finite(r.get(self.key))]
        out = []
        for i, (step, _) in enumerate(points):
            window = [v for _, v in points[max(0, i - self.smooth + 1) : i + 1]]
            out.append((step, sum(window) / len(window)))
        return out

    def collapse_step(self, records: Sequence[Mapping[str, Any]]) -> int | None:
        """The step at which the run collapsed, or None."""
        series = self.smoothed(records)
        best = -math.inf
        run_start, run_length = None, 0
        for i, (step, value) in enumerate(series):
            if i + 1 >= self.min_steps and best > 0 and value < self.fraction * best:
                run_start = step if run_length == 0 else run_start
                run_length += 1
                if run_length >= self.patience:
                    return run_start
            else:
                run_length = 0
            if i + 1 >= self.min_steps:
                best = max(best, value)
        return None


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
