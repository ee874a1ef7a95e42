"""The C-scanner path of loads_bounded (small bodies) accepts and refuses exactly what the bounded
decoder does, with the same objects and the same messages."""

from __future__ import annotations

import json

import pytest

from agent_server.serving import bounded_json
from agent_server.serving.bounded_json import JSONRefused, loads_bounded

LIMITS = {"max_depth": 3, "max_items": 6, "max_number_chars": 6}

BODIES = [
    b'{"queries": ["river", "sea"], "topk": 3}',
    b'{"query": "caf\\u00e9 \xc3\xa9", "return_scores": true, "x": null, "y": -1.5e3}',
    b'{"a": "\\ud800 lone surrogate escape"}',
    b'[[["deep enough"]]]',  # depth 3: the limit
    b'[[[["too deep"]]]]',
    b"[1, 2, 3, 4, 5, 6]",  # 6 values: the limit
    b"[1, 2, 3, 4, 5, 6, 7]",
    b'{"a": 1, "a": 2, "a": 3, "a": 4, "a": 5, "a": 6, "a": 7}',  # 7 members, one key: still 7 values
    b'{"a": 1, "a": 2}',
    b'{"n": 123456}',
    b'{"n": 1234567}',
    b'{"n": 1.5e999}',
    b'{"n": NaN}',
    b"[-Infinity]",
    b'{"a": [1, {"b": NaN}], "c": [[[[1]]]]}',  # two refusals: the bounded decoder's first one is the answer
    b'{"a": [1, 2,]}',
    b"{not json",
    b"",
    b'"just a string"',
    b"[" * 5000 + b"]" * 5000,  # deeper than the C scanner's recursion limit
    b"\xff\xfe{\x00}\x00",  # UTF-16
]


def _outcome(decode, body: bytes):
    try:
        return "ok", decode(body)
    except JSONRefused as err:
        return "refused", err.message, err.too_large
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return type(err).__name__, str(err)


def _bounded_only(body: bytes):
    text = body.decode(json.detect_encoding(body), "surrogatepass")
    return bounded_json._BoundedDecoder(**LIMITS).decode(text)


@pytest.mark.parametrize("body", BODIES)
def test_the_fast_path_answers_as_the_bounded_decoder(body):
    assert len(body) <= bounded_json.FAST_BYTES
    fast = _outcome(lambda b: loads_bounded(b, **LIMITS), body)
    assert fast == _outcome(_bounded_only, body)
    if body == BODIES[0]:
        assert fast == ("ok", {"queries": ["river", "sea"], "topk": 3})
