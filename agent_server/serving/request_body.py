"""Decoding request bodies in the two encodings retrieval clients use, JSON and msgpack, within limits.

GEM posts msgpack bytes with `requests.post(url, data=...)`, which sends no Content-Type at all, so
msgpack is chosen by Content-Type when there is one and by sniffing the first byte when there is not.
Both decoders stop at the limits of `BodyLimits` while they parse (agent_server.serving.bounded_json), so a
hostile body costs bounded time and memory; agent_server.serving.request_guard applies them to every request.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import msgpack

from agent_server.serving.bounded_json import JSONRefused, loads_bounded

MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")
EMPTY_BODY = 'empty request body: send a JSON object such as {"queries": ["..."]}'


def items_for(batch: int) -> int:
    """The default value limit for requests of up to `batch` queries or steps: room for that many
    objects of three values each, and the rest of the body. Pydantic checks each value of an accepted
    body on the event loop (a bad one at about 10 µs), so this limit is also what bounds that."""
    return 4 * batch + 1024


@dataclass(frozen=True)
class BodyLimits:
    """What one request body may be; each but `max_number_chars` is a flag of both servers."""

    max_bytes: int = 32 * 1024 * 1024  # --max-body-bytes
    max_depth: int = 32  # --max-json-depth: arrays and objects nested
    # --max-json-items: values in the whole body (each array element, each member)
    max_items: int = items_for(4096)
    max_number_chars: int = 64  # a longer number is no seed, index or topk
    read_timeout_s: float = 30.0  # --body-timeout: from the end of the headers to the end of the body

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_depth", "max_items", "max_number_chars", "read_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"BodyLimits.{name} must be positive, got {getattr(self, name)}")


class BodyError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def too_large(size: int | str | None, limit: int) -> BodyError:
    """The 413 of a body over `limit` bytes (`size`: its declared length, when it has one)."""
    if size is None:
        return BodyError(413, f"request body exceeds the limit of {limit} bytes")
    return BodyError(413, f"request body of {size} bytes exceeds the limit of {limit} bytes")


def _is_msgpack_map(first: int) -> bool:
    # fixmap (0x80-0x8f), map16 (0xde), map32 (0xdf); a JSON object starts with '{' or white space.
    return 0x80 <= first <= 0x8F or first in (0xDE, 0xDF)


def wants_msgpack(content_type: str | None, body: bytes) -> bool:
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype in MSGPACK_TYPES:
        return True
    if ctype in ("", "application/octet-stream"):
        return bool(body) and _is_msgpack_map(body[0])
    return False


def _unpack(body: bytes, limits: BodyLimits) -> Any:
    """msgpack's own limits and hooks bound each container and the values counted as they are built;
    a walk (over at most `max_items` values) then checks nesting and refuses NaN/Infinity as JSON does."""
    count = 0

    def counted(container: Any) -> Any:
        nonlocal count
        count += len(container)
        if count > limits.max_items:
            raise JSONRefused(f"more than {limits.max_items} values in one body", too_large=True)
        return container

    try:
        obj = msgpack.unpackb(
            body,
            raw=False,
            strict_map_key=False,
            max_array_len=limits.max_items,
            max_map_len=limits.max_items,
            list_hook=counted,
            object_hook=counted,
        )
    except msgpack.StackError as err:  # its C stack holds 1,024 levels
        raise JSONRefused(f"arrays and maps nested deeper than {limits.max_depth} levels") from err
    except (msgpack.ExtraData, msgpack.FormatError, ValueError) as err:
        if isinstance(err, JSONRefused):
            raise
        if "exceeds max_" in str(err):  # msgpack says so only in its message: "N exceeds max_array_len(M)"
            raise JSONRefused(f"more than {limits.max_items} values in one body ({err})", too_large=True) from err
        raise BodyError(400, f"request body is not valid msgpack: {err or type(err).__name__}") from err
    stack = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise JSONRefused(f"{value} is not a number this server takes")
        if isinstance(value, list | dict):
            if depth >= limits.max_depth:
                raise JSONRefused(f"arrays and maps nested deeper than {limits.max_depth} levels")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
    return obj


def decode_body(
    body: bytes, content_type: str | None, limits: BodyLimits, *, allow_msgpack: bool = True
) -> tuple[Any, bool]:
    """(decoded object, whether it was msgpack).

    Raises BodyError: 413 over `limits.max_bytes` or `limits.max_items`; 400 when empty, not JSON
    (or msgpack), not UTF-8, nested too deep, or holding a long number or NaN/Infinity.
    """
    if len(body) > limits.max_bytes:
        raise too_large(len(body), limits.max_bytes)
    if not body:
        raise BodyError(400, EMPTY_BODY)
    try:
        if allow_msgpack and wants_msgpack(content_type, body):
            return _unpack(body, limits), True
        return loads_bounded(
            body, max_depth=limits.max_depth, max_items=limits.max_items, max_number_chars=limits.max_number_chars
        ), False
    except JSONRefused as err:
        raise BodyError(413 if err.too_large else 400, f"request body refused: {err.message}") from err
    except UnicodeDecodeError as err:
        raise BodyError(400, f"request body is not UTF-8 text: {err}") from err
    except json.JSONDecodeError as err:
        raise BodyError(400, f"request body is not valid JSON: {err}") from err


def encode_msgpack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)
