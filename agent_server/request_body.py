"""Decoding request bodies in the two encodings retrieval clients use: JSON and msgpack.

GEM posts msgpack bytes with `requests.post(url, data=...)`, which sends no Content-Type at all, so
msgpack is chosen by Content-Type when there is one and by sniffing the first byte when there is not.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack

MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


class BodyError(ValueError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


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


def decode_body(body: bytes, content_type: str | None, max_bytes: int) -> tuple[Any, bool]:
    """(decoded object, whether it was msgpack); BodyError with a 4xx status and a message otherwise."""
    if len(body) > max_bytes:
        raise BodyError(413, f"request body of {len(body)} bytes exceeds the limit of {max_bytes} bytes")
    if not body:
        raise BodyError(400, "empty request body: send a JSON object such as {\"queries\": [\"...\"]}")
    if wants_msgpack(content_type, body):
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=False), True
        except (msgpack.ExtraData, msgpack.FormatError, msgpack.StackError, ValueError) as err:
            raise BodyError(400, f"request body is not valid msgpack: {err}") from err
    try:
        return json.loads(body), False
    except UnicodeDecodeError as err:
        raise BodyError(400, f"request body is not UTF-8 text: {err}") from err
    except json.JSONDecodeError as err:
        raise BodyError(400, f"request body is not valid JSON: {err}") from err


def encode_msgpack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)
