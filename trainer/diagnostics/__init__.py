"""Diagnostics that show the LLD death spiral coming (arXiv 2512.04220 §4): likelihood measures, per-step
metrics, their JSONL/TensorBoard log, the three-phase collapse monitor and the diagnostics plot.

The plot module imports matplotlib lazily, so importing this package needs only torch.
"""

from trainer.diagnostics.collapse_monitor import CollapseMonitor, MonitorConfig, MonitorStatus
from trainer.diagnostics.likelihood import (
    displacement_stats,
    likelihood_by_outcome,
    likelihood_displacement,
    response_logprob_sums,
)
from trainer.diagnostics.metrics_log import MetricsLogger, read_metrics
from trainer.diagnostics.plots import plot_main, plot_metrics
from trainer.diagnostics.step_metrics import METRIC_KEYS, StepMetrics, metric_table_markdown

__all__ = [
    "METRIC_KEYS",
    "CollapseMonitor",
    "MetricsLogger",
    "MonitorConfig",
    "MonitorStatus",
    "StepMetrics",
    "displacement_stats",
    "likelihood_by_outcome",
    "likelihood_displacement",
    "metric_table_markdown",
    "plot_main",
    "plot_metrics",
    "read_metrics",
    "response_logprob_sums",
]
