"""A JSON decoder that refuses hostile input while it parses, at a cost bounded by its limits.

The stdlib decoder (`json.loads`) builds any array in full, recurses until RecursionError on deep
nesting, calls `int()` on a 5,000-digit number and accepts NaN and Infinity, which are not JSON. This
one is the same stdlib decoder with its documented hooks (`parse_int`, `parse_float`,
`parse_constant`) and its pure-Python scanner (`json.scanner.py_make_scanner`, whose array and object
parsers are attributes of the decoder, unlike the C scanner's), wrapped to count nesting and values:
it stops at the first value past a limit, before building the rest. Strings are still scanned by the
stdlib's C `scanstring`, so long texts cost what they cost in `json.loads`; the pure-Python part costs
about 1 µs a value, which `max_items` bounds. No hand-written tokenizer.

A small body (up to FAST_BYTES, most requests) is first decoded by the stdlib's C scanner with the same
number and constant hooks, its nesting and values then counted in one walk: its cost is bounded by its
size, and the answer is the same object several times faster. Anything that path refuses is decoded
again by the bounded decoder, whose refusal and message are the answer, so both paths accept and refuse
the same bodies with the same messages.
"""

from __future__ import annotations

import functools
import json
import json.decoder
import json.scanner
import math
from collections.abc import Callable
from typing import Any

ScanOnce = Callable[[str, int], tuple[Any, int]]

# Bodies up to this size go through the C scanner first (see the module doc).
FAST_BYTES = 16 * 1024


class JSONRefused(ValueError):
    """Valid or not, JSON this server will not parse; `too_large` when it is a matter of size (413)."""

    def __init__(self, message: str, *, too_large: bool = False):
        super().__init__(message)
        self.message = message
        self.too_large = too_large


def _number_text(text: str, limit: int) -> None:
    # Python's int() is quadratic in the digits (and refuses over 4,300 of them with a ValueError).
    if len(text) > limit:
        raise JSONRefused(f"a number of {len(text)} characters (limit {limit})")


def _parse_int(limit: int, text: str) -> int:
    _number_text(text, limit)
    return int(text)


def _parse_float(limit: int, text: str) -> float:
    _number_text(text, limit)
    value = float(text)
    if not math.isfinite(value):  # 1e999: an exponent no float holds
        raise JSONRefused(f"the number {text} is out of range")
    return value


def _refuse_constant(name: str) -> Any:
    raise JSONRefused(f"{name} is not a JSON value")


class _BoundedDecoder(json.JSONDecoder):
    def __init__(self, max_depth: int, max_items: int, max_number_chars: int):
        super().__init__(
            parse_int=functools.partial(_parse_int, max_number_chars),
            parse_float=functools.partial(_parse_float, max_number_chars),
            parse_constant=_refuse_constant,
            strict=True,
        )
        self.max_depth = max_depth
        self.max_items = max_items
        self.depth = 0
        self.items = 0
        self.parse_array = self._array
        self.parse_object = self._object
        self.scan_once = json.scanner.py_make_scanner(self)

    def _counted(self, scan_once: ScanOnce) -> ScanOnce:
        def scan(text: str, idx: int) -> tuple[Any, int]:
            self.items += 1
            if self.items > self.max_items:
                raise JSONRefused(f"more than {self.max_items} JSON values in one body", too_large=True)
            return scan_once(text, idx)

        return scan

    def _enter(self) -> None:
        self.depth += 1
        if self.depth > self.max_depth:
            raise JSONRefused(f"arrays and objects nested deeper than {self.max_depth} levels")

    def _array(self, s_and_end: tuple[str, int], scan_once: ScanOnce) -> tuple[list[Any], int]:
        self._enter()
        try:
            return json.decoder.JSONArray(s_and_end, self._counted(scan_once))
        finally:
            self.depth -= 1

    def _object(self, s_and_end: tuple[str, int], strict: bool, scan_once: ScanOnce, *hooks: Any) -> Any:
        self._enter()
        try:
            return json.decoder.JSONObject(s_and_end, strict, self._counted(scan_once), *hooks)
        finally:
            self.depth -= 1


class _CheckedDecoder(json.JSONDecoder):
    """The stdlib decoder with its C scanner, the bounded decoder's number and constant hooks, and each
    object's members counted (duplicate keys included, as the bounded decoder counts them)."""

    def __init__(self, max_number_chars: int):
        super().__init__(
            parse_int=functools.partial(_parse_int, max_number_chars),
            parse_float=functools.partial(_parse_float, max_number_chars),
            parse_constant=_refuse_constant,
            object_pairs_hook=self._members,
            strict=True,
        )
        self.members = 0

    def _members(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        self.members += len(pairs)
        return dict(pairs)


def _within(obj: Any, members: int, max_depth: int, max_items: int) -> bool:
    """Whether `obj` (holding `members` object members) nests at most `max_depth` deep and holds at
    most `max_items` values, counted as the bounded decoder counts them."""
    items = members
    level = [obj] if isinstance(obj, list | dict) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return False
        inner = []
        for container in level:
            if isinstance(container, dict):
                values: Any = container.values()
            else:
                values = container
                items += len(container)
            inner.extend(v for v in values if isinstance(v, list | dict))
        if items > max_items:
            return False
        level = inner
    return True


def loads_bounded(data: bytes, *, max_depth: int, max_items: int, max_number_chars: int) -> Any:
    """`json.loads(data)` within limits.

    Raises JSONRefused (nesting, value count, a long number, NaN/Infinity, a float out of range),
    json.JSONDecodeError (not JSON) or UnicodeDecodeError (not UTF-8/16/32 text).
    """
    text = data.decode(json.detect_encoding(data), "surrogatepass")  # as json.loads does with bytes
    if len(data) <= FAST_BYTES:
        checked = _CheckedDecoder(max_number_chars)
        try:
            obj = checked.decode(text)
        except (ValueError, RecursionError):  # JSONRefused, JSONDecodeError; C recursion on deep nesting
            pass
        else:
            if _within(obj, checked.members, max_depth, max_items):
                return obj
    return _BoundedDecoder(max_depth, max_items, max_number_chars).decode(text)
