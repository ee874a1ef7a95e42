"""The README and docs/ are the project's reference and its evidence: every relative link in them
resolves to a file in the checkout, and nothing under docs/ is ignored by git (a figure's metrics
must be committable beside it)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
# [text](target) and [text]: target, outside code spans; images too.
_INLINE = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*(\S+)", re.MULTILINE)
_FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
_CODE = re.compile(r"`[^`\n]*`")


def markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "examples").rglob("*.md"))]


def relative_links(text: str) -> list[str]:
    """Link targets that are paths in the checkout (no scheme, no pure #anchor), anchors dropped."""
    text = _CODE.sub("", _FENCE.sub("", text))
    targets = _INLINE.findall(text) + _REFERENCE.findall(text)
    out = []
    for target in targets:
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue
        out.append(unquote(target.split("#", 1)[0]))
    return out


def test_the_link_finder_sees_links_and_skips_urls_and_code():
    text = "see [a](docs/a.md#x), ![p](fig.png) and [u](https://x.org/a) `[c](not/a/link)`\n[r]: ref/b.txt\n"
    assert relative_links(text) == ["docs/a.md", "fig.png", "ref/b.txt"]


@pytest.mark.parametrize("doc", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(doc: Path):
    missing = [t for t in relative_links(doc.read_text(encoding="utf-8")) if not (doc.parent / t).exists()]
    assert not missing, f"{doc.relative_to(ROOT)} links to missing paths: {missing}"


def test_nothing_under_docs_is_ignored():
    probes = [
        "docs/experiments/death-spiral/runs/grpo/seed-1/metrics.jsonl",
        "docs/experiments/x/runs/a.metrics.jsonl",
        "docs/benchmarks/build/table.txt",
        "docs/experiments/death-spiral-sweep.md",
    ]
    result = subprocess.run(
        ["git", "check-ignore", "--no-index", "--verbose", *probes], cwd=ROOT, capture_output=True, text=True
    )
    if result.returncode == 128:
        pytest.skip(f"not a git checkout: {result.stderr.strip()}")
    assert result.returncode == 1, f"ignored under docs/: {result.stdout}"
    assert subprocess.run(["git", "check-ignore", "--no-index", "-q", "runs/x"], cwd=ROOT).returncode == 0
