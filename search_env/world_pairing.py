"""Is the retriever serving the world the questions come from? Checked once, when a run starts.

Questions of the embedded world `world:<preset>` are answerable only from that world's corpus; a
retriever serving another world (or wiki-18) answers every search with passages about other names,
and a run trained or evaluated so fails silently. The retrieval server reports each corpus it serves
with its fingerprint in `/info` ("corpora"); this compares them with the world's corpus. A server that
reports none (Search-R1's own, or one serving a prebuilt index without its corpus file) is not checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search_env.corpus_fingerprint import corpus_fingerprint
from search_env.home import searchgym_home

WORLD_PREFIX = "world"


class WorldMismatch(ValueError):
    """The retriever serves another corpus than the world the data come from; the message names both."""


def world_preset(data: str) -> str | None:
    """The preset of a `world[:preset[:single|:multi]]` data spec; None for other data."""
    if data != WORLD_PREFIX and not data.startswith(WORLD_PREFIX + ":"):
        return None
    return data.split(":")[1] if ":" in data and data.split(":")[1] else "default"


def _known_worlds() -> dict[str, str]:
    """Fingerprint -> world folder name (e.g. "small-2af559e961b0") of every world generated under the home."""
    out = {}
    for corpus in sorted((searchgym_home() / "worlds").glob("*/corpus.jsonl")):
        out[corpus_fingerprint(corpus, with_name=False)] = corpus.parent.name
    return out


def check_world_pairing(data: str, info: Any, retriever_url: str) -> None:
    """Raise `WorldMismatch` when `data` is an embedded world whose corpus the retriever (its `/info`
    body `info`) does not serve; do nothing for other data or a retriever that reports no corpus."""
    preset = world_preset(data)
    corpora = info.get("corpora") if isinstance(info, dict) else None
    served = [c for c in corpora or [] if isinstance(c, dict) and c.get("fingerprint")]
    if preset is None or not served:
        return
    from search_env.world.store import ensure_world

    world = ensure_world(preset)
    expected = corpus_fingerprint(world.corpus, with_name=False)
    wrong = [c for c in served if c["fingerprint"] != expected]
    if not wrong:
        return
    known = _known_worlds()
    names = []
    for c in wrong:
        name = known.get(c["fingerprint"])
        names.append(f"world {name.rsplit('-', 1)[0]!r}" if name else f"the corpus {Path(str(c['path'])).name}")
    raise WorldMismatch(
        f"the data are world:{preset} but the retriever at {retriever_url} serves {' and '.join(names)}, "
        f"whose passages cannot answer them: serve the same world (agent-server retriever --world {preset}) "
        f"or use its data (world:<preset>)"
    )


def fetch_info(retriever_url: str) -> Any:
    """The retriever's /info (once, no retry: a server that is down is the run's own business), or None."""
    from search_env.http_client import RequestRefused, ServiceUnavailable
    from search_env.retriever_client import RetrieverClient

    try:
        with RetrieverClient(retriever_url, timeout=10, retries=0) as client:
            return client.http.request("GET", "/info", retries=0, outage_wait_s=0)
    except (ServiceUnavailable, RequestRefused, ValueError):
        return None


def check_world_sets(sets: Any, retriever_url: str) -> None:
    """`check_world_pairing` for the data of every set (objects with a `.data` spec) against one retriever."""
    worlds = [s.data for s in sets if world_preset(s.data) is not None]
    if not worlds:
        return
    info = fetch_info(retriever_url)
    for data in worlds:
        check_world_pairing(data, info, retriever_url)
