"""Writing the embedded world to disk once and finding it again.

A world lives in `$SEARCHGYM_HOME/worlds/<name>-<fingerprint>/` (corpus.jsonl, train/dev/test.jsonl,
world.json). It is written into a temporary sibling folder and renamed into place, so concurrent
processes (pytest workers, a server and a test) see either no world or a complete one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_env.home import searchgym_home
from search_env.qa_data import write_qa_jsonl
from search_env.world.config import SPLITS, VERSION, WorldConfig, resolve_config
from search_env.world.generator import generate_world

CORPUS_FILE = "corpus.jsonl"
META_FILE = "world.json"  # written last: its presence marks a complete world


@dataclass(frozen=True)
class WorldPaths:
    root: Path
    corpus: Path
    qa: dict[str, Path]
    fingerprint: str

    @classmethod
    def at(cls, root: Path, fingerprint: str) -> WorldPaths:
        return cls(root=root, corpus=root / CORPUS_FILE, qa={s: root / f"{s}.jsonl" for s in SPLITS},
                   fingerprint=fingerprint)

    @property
    def meta(self) -> Path:
        return self.root / META_FILE

    def info(self) -> dict[str, Any]:
        """The contents of world.json: config, version, counts, fingerprint."""
        return json.loads(self.meta.read_text(encoding="utf-8"))


def write_world(config: str | WorldConfig, out_dir: str | Path, seed: int | None = None) -> WorldPaths:
    """Generate a world and write its files into `out_dir` (created if needed; files overwritten)."""
    config = resolve_config(config, seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = generate_world(config)
    paths = WorldPaths.at(out, config.fingerprint())
    with paths.corpus.open("w", encoding="utf-8") as handle:
        for passage in world.passages:
            handle.write(passage.to_json() + "\n")
    for split in SPLITS:
        write_qa_jsonl(world.questions[split], paths.qa[split])
    meta = {
        "name": config.name,
        "version": VERSION,
        "fingerprint": paths.fingerprint,
        "config": config.model_dump(mode="json"),
        "counts": world.counts(),
    }
    paths.meta.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return paths


def ensure_world(
    name_or_config: str | WorldConfig = "default", root: Path | None = None, seed: int | None = None
) -> WorldPaths:
    """The world's files under `root` (default `$SEARCHGYM_HOME/worlds`), generating them once."""
    config = resolve_config(name_or_config, seed)
    parent = Path(root) if root is not None else searchgym_home() / "worlds"
    fingerprint = config.fingerprint()
    final = parent / f"{config.name}-{fingerprint}"
    if (final / META_FILE).is_file():
        return WorldPaths.at(final, fingerprint)
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; the cache is shared like any other
        write_world(config, staging)
        try:
            os.rename(staging, final)
        except OSError:
            # Another process renamed its complete copy first (or a stale partial folder sits there).
            if not (final / META_FILE).is_file():
                shutil.rmtree(final, ignore_errors=True)
                os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return WorldPaths.at(final, fingerprint)
