"""The results table: data set | n | EM | F1 | mean turns | mean searches | invalid-action rate | failed."""

from __future__ import annotations

import io
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from search_env.evaluation.results import SetMetrics

HEADERS = ("data set", "policy", "n", "EM", "F1", "mean turns", "mean searches", "invalid-action rate", "failed")


def table_rows(metrics: Sequence[SetMetrics]) -> list[tuple[str, ...]]:
    return [
        (
            m.data_set,
            m.policy,
            str(m.n),
            f"{m.em:.3f}",
            f"{m.f1:.3f}",
            f"{m.mean_turns:.2f}",
            f"{m.mean_searches:.2f}",
            f"{m.invalid_action_rate:.3f}",
            str(m.failed),
        )
        for m in metrics
    ]


def render_table(metrics: Sequence[SetMetrics], title: str = "searchgym eval") -> str:
    """The table as text, drawn by rich (a core dependency)."""
    table = Table(title=title)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if i < 2 else "right")
    for row in table_rows(metrics):
        table.add_row(*row)
    buffer = io.StringIO()
    Console(file=buffer, width=150, force_terminal=False, color_system=None).print(table)
    return buffer.getvalue()
