"""The questions an env plays: the embedded world by default, or any Search-R1 / FlashRAG data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from search_env.qa_data import QARecord, load_qa

WORLD_PREFIX = "world"


def load_env_records(
    data: str | Path | Sequence[QARecord] = "world:default",
    split: str = "train",
    config: str | None = None,
    hops: Sequence[int] | None = None,
    limit: int | None = None,
    *,
    skip_bad_lines: bool = False,
) -> list[QARecord]:
    """Records for an env.

    `data` is `"world"` / `"world:<preset>"` (the embedded world, generated on first use), a file
    or folder path, a Hugging Face data set name (with `config`, e.g. FlashRAG's "nq"), or records.
    `hops` keeps only records whose `metadata["hops"]` is listed (the world's single/multi-hop variants).
    A bad record of a file raises BadRecordError naming it, or with `skip_bad_lines` is left out (load_qa).
    """
    if isinstance(data, str | Path):
        text = str(data)
        if text == WORLD_PREFIX or text.startswith(WORLD_PREFIX + ":"):
            from search_env.world.store import ensure_world

            preset = text.partition(":")[2] or "default"
            world = ensure_world(preset)
            if split not in world.qa:  # the world's splits are a fixed set, looked up, never a path
                raise ValueError(f"the embedded world has no split {split!r}: its splits are {sorted(world.qa)}")
            records = load_qa(world.qa[split])
        else:
            records = load_qa(data, split=split, config=config, skip_bad_lines=skip_bad_lines)
    else:
        records = list(data)
    if hops is not None:
        wanted = set(hops)
        records = [r for r in records if r.metadata.get("hops") in wanted]
    if limit is not None:
        records = records[:limit]
    if not records:
        raise ValueError(f"no questions in {data!r} (split {split!r}, hops {hops})")
    return records
