"""Does the env server's retriever serve the embedded world a session's data come from, and would it accept
the session's topk?

search_env.world_pairing compares a world's corpus with the corpora a retriever's `/info` reports; this
applies it to the env server, which has one retriever for all sessions: a session on `world:<preset>`
data that retriever cannot answer is refused at create (409: the request is valid, the server's
retriever is what conflicts with it), with WorldMismatch's message. The retriever's `/info` is fetched
once and kept `info_ttl_s` seconds, its answer or its silence alike (a retriever restarted, or come up,
with another corpus is seen within that time); each world's verdict is kept while the corpora reported
stay the same, so a create pays for neither a request nor a fingerprint. A retriever that is down or
reports no corpora (Search-R1's own, a prebuilt index) is not checked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

from search_env.retrieval_schema import refused_topk_limit
from search_env.world_pairing import WorldMismatch, check_world_pairing, fetch_info, world_preset

log = logging.getLogger("agent_server.env")

DEFAULT_INFO_TTL_S = 30.0


def _corpora(info: Any) -> Any:
    return info.get("corpora") if isinstance(info, dict) else None


def _mismatch(data: str, info: Any, retriever_url: str) -> str | None:
    """WorldMismatch's message for `data` against the /info body `info`, or None (runs in a worker thread:
    it may generate the world and reads its corpus)."""
    try:
        check_world_pairing(data, info, retriever_url)
    except WorldMismatch as err:
        return str(err)
    return None


class RetrieverWorlds:
    """The worlds one retriever can answer, from its `/info` (fetched off the event loop, kept `info_ttl_s`)."""

    def __init__(self, retriever_url: str, *, info_ttl_s: float = DEFAULT_INFO_TTL_S):
        self.retriever_url = retriever_url
        self.info_ttl_s = info_ttl_s
        self._info: Any = None
        self._fetched_at: float | None = None
        self._fetch: asyncio.Task[Any] | None = None
        self._verdicts: dict[str, str | None] = {}  # data spec -> mismatch message, for the corpora held

    async def _current_info(self) -> Any:
        fresh = self._fetched_at is not None and time.monotonic() - self._fetched_at < self.info_ttl_s
        if fresh:
            return self._info
        if self._fetch is None or self._fetch.done():
            # One fetch at a time, however many creates wait on it.
            self._fetch = asyncio.get_running_loop().create_task(asyncio.to_thread(fetch_info, self.retriever_url))
        info = await asyncio.shield(self._fetch)
        if _corpora(info) != _corpora(self._info):
            self._verdicts = {}
        self._info = info
        self._fetched_at = time.monotonic()
        return info

    async def mismatch(self, data: str) -> str | None:
        """WorldMismatch's one-line message when `data` (a `world[:preset...]` spec) is a world the retriever
        does not serve; None for other data, a served world, or a retriever down or reporting no corpora."""
        if world_preset(data) is None:
            return None
        info = await self._current_info()
        verdicts = self._verdicts  # a refresh while this one is computed replaces the dict, not its entry
        if data not in verdicts:
            verdicts[data] = await asyncio.to_thread(_mismatch, data, info, self.retriever_url)
        return verdicts[data]

    async def topk_violation(self, topk: int) -> str | None:
        """The refusal when `topk` is above the retriever's `max_topk` (`limits` in its /info): the session's
        every search would be refused. None when within it, or the retriever reports no limits."""
        max_topk = refused_topk_limit(topk, await self._current_info())
        if max_topk is not None:
            return (
                f"topk={topk} but this env server's retriever ({self.retriever_url}) accepts topk <= {max_topk} "
                "(its --max-topk)"
            )
        return None

    async def warn_unserved(self, presets: Iterable[str]) -> None:
        """A warning line for each preset the retriever cannot answer (sessions on it will be refused);
        nothing when the retriever is unreachable or reports no corpora."""
        try:
            if await self._current_info() is None:
                log.info("the retriever at %s did not answer /info: worlds checked at create", self.retriever_url)
                return
            for preset in presets:
                message = await self.mismatch(f"world:{preset}")
                if message is not None:
                    log.warning("sessions on world:%s will be refused (409): %s", preset, message)
        except Exception:  # a start-up courtesy: its failure must not outlive it (creates check again)
            log.exception("the start-up check of the worlds against the retriever failed")
