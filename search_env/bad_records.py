"""The one error for a bad line of a data file (a corpus or a QA set): which file, where, and what is wrong."""

from __future__ import annotations

from pathlib import Path


class BadRecordError(ValueError):
    """A record of `path` that cannot be used: `line` is its 1-based line (JSONL) or, with
    `unit="row"` / `"item"`, its 0-based parquet row / JSON array index (None: `path` names the
    record alone); `reason` says what is wrong.

    `str()` is one line a user can act on: `corpus.jsonl:21: not JSON (Expecting value: column 1)`.
    """

    def __init__(self, path: str | Path, line: int | None, reason: str, *, unit: str = "line") -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        self.unit = unit
        super().__init__(f"{self.where}: {reason}")

    @property
    def where(self) -> str:
        """`file:line`, `file row N` / `file item N`, or the bare name of a record known by name only."""
        if self.line is None:
            return self.path
        return f"{self.path}:{self.line}" if self.unit == "line" else f"{self.path} {self.unit} {self.line}"
