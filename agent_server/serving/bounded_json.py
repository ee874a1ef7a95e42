"""A JSON decoder that refuses hostile input while it parses, at a cost bounded by its limits.

The stdlib decoder (`json.loads`) builds any array in full, recurses until RecursionError on deep
nesting, calls `int()` on a 5,000-digit number and accepts NaN and Infinity, which are not JSON. This
one is the same stdlib decoder with its documented hooks (`parse_int`, `parse_float`,
`parse_constant`) and its pure-Python scanner (`json.scanner.py_make_scanner`, whose array and object
parsers are attributes of the decoder, unlike the C scanner's), wrapped to count nesting and values:
it stops at the first value past a limit, before building the rest. Strings are still scanned by the
stdlib's C `scanstring`, so long texts cost what they cost in `json.loads`; the pure-Python part costs
about 1 µs a value, which `max_items` bounds. No hand-written tokenizer.
"""

from __future__ import annotations

import json
import json.decoder
import json.scanner
import math
from collections.abc import Callable
from typing import Any

ScanOnce = Callable[[str, int], tuple[Any, int]]


class JSONRefused(ValueError):
    """Valid or not, JSON this server will not parse; `too_large` when it is a matter of size (413)."""

    def __init__(self, message: str, *, too_large: bool = False):
        super().__init__(message)
        self.message = message
        self.too_large = too_large


class _BoundedDecoder(json.JSONDecoder):
    def __init__(self, max_depth: int, max_items: int, max_number_chars: int):
        super().__init__(parse_int=self._int, parse_float=self._float, parse_constant=self._constant, strict=True)
        self.max_depth = max_depth
        self.max_items = max_items
        self.max_number_chars = max_number_chars
        self.depth = 0
        self.items = 0
        self.parse_array = self._array
        self.parse_object = self._object
        self.scan_once = json.scanner.py_make_scanner(self)

    def _number_text(self, text: str) -> None:
        # Python's int() is quadratic in the digits (and refuses over 4,300 of them with a ValueError).
        if len(text) > self.max_number_chars:
            raise JSONRefused(f"a number of {len(text)} characters (limit {self.max_number_chars})")

    def _int(self, text: str) -> int:
        self._number_text(text)
        return int(text)

    def _float(self, text: str) -> float:
        self._number_text(text)
        value = float(text)
        if not math.isfinite(value):  # 1e999: an exponent no float holds
            raise JSONRefused(f"the number {text} is out of range")
        return value

    @staticmethod
    def _constant(name: str) -> Any:
        raise JSONRefused(f"{name} is not a JSON value")

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


def loads_bounded(data: bytes, *, max_depth: int, max_items: int, max_number_chars: int) -> Any:
    """`json.loads(data)` within limits.

    Raises JSONRefused (nesting, value count, a long number, NaN/Infinity, a float out of range),
    json.JSONDecodeError (not JSON) or UnicodeDecodeError (not UTF-8/16/32 text).
    """
    text = data.decode(json.detect_encoding(data), "surrogatepass")  # as json.loads does with bytes
    return _BoundedDecoder(max_depth, max_items, max_number_chars).decode(text)
