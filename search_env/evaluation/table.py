"""The results table: data set | n | EM | F1 | mean turns | mean searches | invalid-action rate."""

from __future__ import annotations

import io
from collections.abc import Sequence

from search_env.evaluation.results import SetMetrics

HEADERS = ("data set", "policy", "n", "EM", "F1", "mean turns", "mean searches", "invalid-action rate")


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
        )
        for m in metrics
    ]


def render_table(metrics: Sequence[SetMetrics], title: str = "searchgym eval") -> str:
    """The table as text: drawn by rich when it is installed, else plain aligned columns."""
    rows = table_rows(metrics)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(HEADERS)]
        lines = [title, "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(lines) + "\n"
    table = Table(title=title)
    for i, header in enumerate(HEADERS):
        table.add_column(header, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(*row)
    buffer = io.StringIO()
    Console(file=buffer, width=120, force_terminal=False, color_system=None).print(table)
    return buffer.getvalue()
