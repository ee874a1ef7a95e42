"""The contract every retrieval backend meets; the server and the benchmarks speak only this."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Hit:
    """One retrieved passage: its corpus id, its wiki-18 `contents`, and the backend's score."""

    id: str
    contents: str
    score: float


class Retriever(Protocol):
    #: one of names.RETRIEVER_BACKENDS; part of the result-cache key and reported by /info.
    name: str

    def search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """Top-k hits for every query, best first, searched as one batch.

        One call at a time (the server serialises calls on one worker thread); a backend may use
        threads of its own inside. A blank query gives an empty list, not an error.
        """
        ...

    def __len__(self) -> int:
        """Number of passages in the index."""
        ...

    def describe(self) -> dict[str, Any]:
        """What /info reports about this backend: index path, passage count, encoder, index type..."""
        ...

    def close(self) -> None: ...
