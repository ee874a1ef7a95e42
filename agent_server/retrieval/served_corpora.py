"""The corpus identity the retrieval server reports in /info (`served_corpora`); the fingerprint itself
lives in search_env, so that clients compute the same one (search_env.world_pairing)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from search_env.corpus_fingerprint import corpus_fingerprint


def served_corpora(description: dict[str, Any]) -> list[dict[str, Any]]:
    """The corpus files named in a backend's `describe()` (a hybrid's two sides included), each with its
    fingerprint (`with_name=False`: a copy or a rename is the same corpus); None where the file is gone."""
    found: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "corpus" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)

    walk(description)
    out = []
    for path in dict.fromkeys(found):
        fingerprint = corpus_fingerprint(path, with_name=False) if Path(path).is_file() else None
        out.append({"path": path, "fingerprint": fingerprint})
    return out
