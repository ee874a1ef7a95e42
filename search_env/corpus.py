"""wiki-18 format corpora: one JSON object a line, `{"id": str, "contents": "\"Title\"\ntext"}`.

Read as a stream so that a 21M-passage corpus never sits in Python memory.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO


@dataclass(frozen=True, slots=True)
class Passage:
    id: str
    contents: str

    @property
    def title(self) -> str:
        return split_contents(self.contents)[0]

    @property
    def text(self) -> str:
        return split_contents(self.contents)[1]

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "contents": self.contents}, ensure_ascii=False)


def format_contents(title: str, text: str) -> str:
    """The wiki-18 `contents` field: the title in double quotes on the first line, then the text."""
    return f'"{title}"\n{text}'


def split_contents(contents: str) -> tuple[str, str]:
    """(title without its quotes, text) of a wiki-18 `contents` field."""
    first, _, rest = contents.partition("\n")
    return first.strip().strip('"'), rest


def open_text(path: str | Path) -> IO[str]:
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def iter_corpus(path: str | Path) -> Iterator[Passage]:
    """Stream the passages of a `.jsonl` or `.jsonl.gz` corpus, in file order.

    Raises ValueError naming the line for a record without `contents`; a record without `id` gets its
    0-based line number as id (as Search-R1's row-number fallback does).
    """
    with open_text(path) as handle:
        for lineno, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                contents = record["contents"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise ValueError(f"{path}:{lineno + 1}: not a wiki-18 passage record ({err})") from err
            yield Passage(id=str(record.get("id", lineno)), contents=str(contents))
