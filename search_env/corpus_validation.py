"""Corpus validation: every line of a wiki-18 JSONL corpus checked once, before any backend indexes it.

Both index builders (BM25 by pyserini, dense by faiss) call `validate_corpus` first, so a bad line is
named the same way for both: `corpus.jsonl:21: not JSON (...)` (a BadRecordError), instead of a Java
stack trace or a JSONDecodeError with no line number. With `skip_bad_lines` the bad lines are
counted and left out, and the builders index a cleaned copy (`write_clean_corpus`).

A good line is a JSON object with a non-blank string `contents` and an `id` that is a non-empty
string or an integer, unique in the file; a record with no `id` gets its 0-based line number (as
Search-R1's row-number fallback does). Blank lines are skipped silently.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import zlib
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from search_env.bad_records import BadRecordError

log = logging.getLogger(__name__)

# Errors kept for the report when skipping (all bad line numbers are kept, only these messages).
_KEPT_ERRORS = 20


@dataclass(frozen=True)
class CorpusCheck:
    """What `validate_corpus` found: `passages` good records, the 1-based `bad_lines` left out (only
    when skipping), the first `errors`, and whether the builders need a cleaned copy (`needs_copy`:
    lines skipped, or ids that are missing or not strings, which pyserini's JsonCollection refuses)."""

    path: Path
    passages: int
    blank_lines: int
    bad_lines: tuple[int, ...] = ()
    errors: tuple[BadRecordError, ...] = ()
    normalised_ids: int = 0
    stamp: tuple[int, int] = (0, 0)
    skip_bad_lines: bool = False
    bad_set: frozenset[int] = field(default=frozenset(), repr=False)  # bad_lines, for lookups

    @property
    def skipped(self) -> int:
        return len(self.bad_lines)

    @property
    def needs_copy(self) -> bool:
        return bool(self.bad_lines) or self.normalised_ids > 0

    def is_bad(self, line: int) -> bool:
        return line in self.bad_set

    def report(self) -> str:
        """One line for the user: the count, and the first bad line if any was skipped."""
        text = f"{self.path}: {self.passages} passages"
        if self.bad_lines:
            text += f", {self.skipped} bad line(s) skipped (first: {self.errors[0]})"
        return text


def parse_passage_line(raw: bytes | str, path: str | Path, line: int) -> tuple[str, str, dict[str, Any]]:
    """(id, contents, record) of one non-blank corpus line; raises BadRecordError naming it."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadRecordError(path, line, not_utf8(raw, err)) from None
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as err:
        raise BadRecordError(path, line, f"not JSON ({err.msg} at column {err.colno}): {_preview(raw)}") from None
    if not isinstance(record, dict):
        raise BadRecordError(path, line, f"not an object with `id` and `contents` ({_kind(record)})")
    if "contents" not in record:
        hint = ' (it has title/text: write them as contents "\\"Title\\"\\ntext")' if "text" in record else ""
        raise BadRecordError(path, line, f"no `contents` field{hint}")
    contents = record["contents"]
    if not isinstance(contents, str):
        raise BadRecordError(path, line, f"`contents` is {_kind(contents)}, not a string")
    if not contents.strip():
        raise BadRecordError(path, line, "`contents` is empty")
    if "id" not in record:
        passage_id = str(line - 1)
    else:
        raw_id = record["id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, str | int):
            raise BadRecordError(path, line, f"`id` is {_kind(raw_id)}, not a string")
        passage_id = str(raw_id)
        if not passage_id.strip():
            raise BadRecordError(path, line, "`id` is empty")
    return passage_id, contents, record


def not_utf8(raw: bytes, err: UnicodeDecodeError) -> str:
    """The reason for a line that is not UTF-8, naming its first bad byte."""
    return f"not UTF-8 (byte 0x{raw[err.start]:02x} at byte {err.start + 1})"


def validate_corpus(path: str | Path, *, skip_bad_lines: bool = False) -> CorpusCheck:
    """Check every line of a `.jsonl` / `.jsonl.gz` corpus (one streaming pass, plus a second over
    duplicated ids only). Raises BadRecordError for the first bad line unless `skip_bad_lines`, in
    which case all bad lines (a repeated id: every occurrence after the first) are recorded instead;
    ValueError if no good passage is left; FileNotFoundError. Results are cached per file state,
    so the builders of a hybrid index read the corpus once.
    """
    path = Path(path).absolute()
    if not path.is_file():
        raise FileNotFoundError(f"corpus not found: {path}")
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns, skip_bad_lines)
    if key in _cache:
        return _cache[key]
    check = _validate(path, skip_bad_lines, (stat.st_size, stat.st_mtime_ns))
    _cache.clear()  # one corpus at a time is enough: the builders of one index share it
    _cache[key] = check
    if check.bad_lines:
        log.warning("%s", check.report())
    return check


_cache: dict[tuple[str, int, int, bool], CorpusCheck] = {}


def _validate(path: Path, skip: bool, stamp: tuple[int, int]) -> CorpusCheck:
    bad: list[int] = []
    errors: list[BadRecordError] = []
    hashes, lines = array("Q"), array("I")
    blank = normalised = 0

    def reject(err: BadRecordError) -> None:
        if not skip:
            raise err
        bad.append(err.line)
        if len(errors) < _KEPT_ERRORS:
            errors.append(err)

    for line, raw in numbered_lines(path):
        if not raw.strip():
            blank += 1
            continue
        try:
            passage_id, _, record = parse_passage_line(raw, path, line)
        except BadRecordError as err:
            reject(err)
            continue
        if not isinstance(record.get("id"), str):
            normalised += 1
        hashes.append(_id_hash(passage_id))
        lines.append(line)
    duplicates = 0
    for err in _duplicates(path, hashes, lines):
        reject(err)
        duplicates += 1
    bad.sort()
    errors.sort(key=lambda e: e.line or 0)  # a repeated id is found after the pass: keep file order
    passages = len(lines) - duplicates
    if passages == 0:
        raise ValueError(f"{path}: no passages" + (f" ({len(bad)} bad line(s), first: {errors[0]})" if bad else ""))
    return CorpusCheck(
        path=path,
        passages=passages,
        blank_lines=blank,
        bad_lines=tuple(bad),
        errors=tuple(errors),
        normalised_ids=normalised,
        stamp=stamp,
        skip_bad_lines=skip,
        bad_set=frozenset(bad),
    )


def _duplicates(path: Path, hashes: array, lines: array) -> Iterator[BadRecordError]:
    """Each line whose id an earlier line already has (a second pass reads only the candidates)."""
    if not hashes:
        return
    import numpy as np

    hash_arr = np.frombuffer(hashes, dtype=np.uint64)
    order = np.argsort(hash_arr, kind="stable")
    sorted_hashes = hash_arr[order]
    repeated = np.flatnonzero(sorted_hashes[1:] == sorted_hashes[:-1])
    if repeated.size == 0:
        return
    line_arr = np.frombuffer(lines, dtype=np.uint32)
    candidates = set(line_arr[order[np.unique(np.concatenate([repeated, repeated + 1]))]].tolist())
    first: dict[str, int] = {}
    for line, raw in numbered_lines(path):
        if line in candidates:
            passage_id = parse_passage_line(raw, path, line)[0]
            if passage_id in first:
                yield BadRecordError(path, line, f"duplicate id {passage_id!r} (first on line {first[passage_id]})")
            else:
                first[passage_id] = line


def write_clean_corpus(check: CorpusCheck, dest: Path) -> Path:
    """Write the good lines of `check.path` to `dest` (plain JSONL), each with a string `id` (a missing
    one becomes its 0-based line number, as the dense store and `iter_corpus` read it)."""
    with dest.open("wb") as out:
        for line, raw in numbered_lines(check.path):
            if raw.strip() and not check.is_bad(line):
                out.write(clean_line(raw, check.path, line))
    return dest


def clean_line(raw: bytes, path: Path, line: int) -> bytes:
    """A good line re-encoded with its id as a string (the line as is when it already has one)."""
    passage_id, _, record = parse_passage_line(raw, path, line)
    if isinstance(record.get("id"), str):
        return raw if raw.endswith(b"\n") else raw + b"\n"
    return (
        json.dumps({"id": passage_id, **{k: v for k, v in record.items() if k != "id"}}, ensure_ascii=False) + "\n"
    ).encode("utf-8")


def numbered_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, raw bytes) of every line, split on b"\\n" as the passage store splits them."""
    with contextlib.ExitStack() as stack:
        handle: BinaryIO = stack.enter_context(path.open("rb"))
        if path.suffix == ".gz":
            handle = stack.enter_context(gzip.open(handle, "rb"))  # type: ignore[arg-type]
        try:
            yield from enumerate(handle, start=1)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{path}: cannot read the compressed corpus ({err})") from err


def _id_hash(passage_id: str) -> int:
    return zlib.crc32(passage_id.encode()) << 32 | zlib.adler32(passage_id.encode())


def _kind(value: Any) -> str:
    """`value`'s JSON type with its article: "an array", "null"."""
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number" if isinstance(value, int | float) else type(value).__name__)


def _preview(raw: str, width: int = 40) -> str:
    text = raw.strip()
    return repr(text if len(text) <= width else text[:width] + "...")
