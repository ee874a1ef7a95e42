"""Answers recorded by client request id, so a retried request is answered, not applied again.

A client (RemoteSearchEnv) sends a fresh id per logical call and the same id on each retry. The
first request that gets through is applied and its answer recorded under the id; a repeat gets that
answer. Only the last few ids are kept: a client retries its latest call, not an old one.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from typing import Any, Generic, TypeVar

from agent_server.serving.errors import ClientError

T = TypeVar("T")


class ReplayMismatch(ClientError):
    """A request id already used for a different request (HTTP 409)."""

    status = 409

    def __init__(self, request_id: str):
        super().__init__(f"request_id {request_id!r} was already used for a different request: send a fresh one")


def fingerprint(*parts: Any) -> str:
    """A digest of what a request asks, to tell a true retry from a reused id."""
    text = json.dumps(parts, sort_keys=True, default=repr, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


class ReplayLog(Generic[T]):
    """The last `size` answers by request id."""

    def __init__(self, size: int = 4):
        self.size = size
        self._answers: OrderedDict[str, tuple[str, T]] = OrderedDict()

    def get(self, request_id: str | None, digest: str) -> T | None:
        """The recorded answer of `request_id`, None if there is none; ReplayMismatch if the id
        was recorded for another request."""
        if request_id is None or request_id not in self._answers:
            return None
        recorded_digest, answer = self._answers[request_id]
        if recorded_digest != digest:
            raise ReplayMismatch(request_id)
        return answer

    def record(self, request_id: str | None, digest: str, answer: T) -> None:
        if request_id is None:
            return
        self._answers[request_id] = (digest, answer)
        self._answers.move_to_end(request_id)
        while len(self._answers) > self.size:
            self._answers.popitem(last=False)

    def __len__(self) -> int:
        return len(self._answers)
