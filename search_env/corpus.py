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

    Raises BadRecordError (a ValueError) naming the file, line and fault of a bad line, as
    `search_env.corpus_validation` checks it (the index builders validate the whole file first); a
    record without `id` gets its 0-based line number as id (as Search-R1's row-number fallback does).
    """
    from search_env.corpus_validation import numbered_lines, parse_passage_line

    for lineno, raw in numbered_lines(Path(path)):
        if raw.strip():
            passage_id, contents, _ = parse_passage_line(raw, path, lineno)
            yield Passage(id=passage_id, contents=contents)
