"""LRU cache of retrieval results keyed by (backend, query, k), with hit counts for /info."""

from __future__ import annotations

from typing import Any

from cachetools import LRUCache

from agent_server.backends.base import Hit


class ResultCache:
    """Used from the event loop only, so it needs no lock. `capacity` 0 disables it."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._lru: LRUCache[tuple[str, str, int], list[Hit]] | None = (
            LRUCache(maxsize=capacity) if capacity > 0 else None
        )
        self.hits = 0
        self.misses = 0

    def get(self, backend: str, query: str, k: int) -> list[Hit] | None:
        if self._lru is None:
            return None
        found = self._lru.get((backend, query, k))
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, backend: str, query: str, k: int, hits: list[Hit]) -> None:
        if self._lru is not None:
            self._lru[(backend, query, k)] = hits

    def stats(self) -> dict[str, Any]:
        lookups = self.hits + self.misses
        return {
            "capacity": self.capacity,
            "size": 0 if self._lru is None else len(self._lru),
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": self.hits / lookups if lookups else 0.0,
        }
