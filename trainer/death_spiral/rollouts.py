"""What each run's policy does at each test evaluation, read from its `eval/<tag>.jsonl` episodes: EM, how
often it searches and answers, its most repeated answers (a collapsed policy guesses one stock answer), and
a few transcripts. Written by the death-spiral report as `rollouts.md`, to explain a collapse from the
rollouts themselves rather than from the curves (issue 20 part 2)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: characters of one turn shown in a transcript (the prompt is left out: it is the same for every episode)
TURN_CHARS = 240
#: a line longer than this in an eval file is skipped, read a piece at a time
MAX_LINE_CHARS = 1_000_000


def eval_files(run_dir: Path) -> list[Path]:
    """The run's eval files in the order they were written: before, step-NNNNNN..., after."""
    files = {p.stem: p for p in (run_dir / "eval").glob("*.jsonl")} if (run_dir / "eval").is_dir() else {}
    order = ["before", *sorted(t for t in files if t.startswith("step-")), "after"]
    return [files[t] for t in order if t in files]


def read_episodes(path: Path) -> list[dict[str, Any]]:
    """The episode rows of one eval file (search_env.evaluation.results.EpisodeResult as JSON) of its first
    data set: the trainer evaluates the whole test split first, then its single- and multi-hop parts again
    (the same questions), which would count twice. Lines too long or not JSON objects are skipped."""
    rows = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        while line := handle.readline(MAX_LINE_CHARS + 1):  # never more than the limit held at once
            if len(line) > MAX_LINE_CHARS:
                while line and not line.endswith("\n"):  # skip the rest of the long line, a piece at a time
                    line = handle.readline(MAX_LINE_CHARS + 1)
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
    first = rows[0].get("data_set") if rows else None
    return [r for r in rows if r.get("data_set") == first]


def eval_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """EM, mean searches, the share of episodes that answered, and the three most frequent answers with
    their share of the episodes."""
    n = max(len(rows), 1)
    answers = Counter(str(r.get("answer")).strip().lower() for r in rows if r.get("answer") is not None)
    return {
        "episodes": len(rows),
        "em": sum(float(r.get("em", 0.0)) for r in rows) / n,
        "searches": sum(int(r.get("num_searches", 0)) for r in rows) / n,
        "answered": sum(r.get("answer") is not None for r in rows) / n,
        "top_answers": [(a, c / n) for a, c in answers.most_common(3)],
    }


def _turn_text(turn: Any) -> str:
    if isinstance(turn, dict):
        role, text = str(turn.get("role", "?")), str(turn.get("text", turn.get("content", "")))
    else:
        role, text = "?", str(turn)
    text = " ".join(text.split())
    return f"{role}: {text[:TURN_CHARS]}{' ...' if len(text) > TURN_CHARS else ''}"


def transcript_markdown(row: dict[str, Any]) -> str:
    """One episode as a quoted block: question, golds, each turn (cut to TURN_CHARS), EM."""
    golds = ", ".join(map(str, row.get("golden_answers", [])))
    lines = [f"> **Q:** {row.get('question', '')} (gold: {golds}; EM {float(row.get('em', 0.0)):.0f})"]
    turns = [t for t in row.get("transcript", []) if not (isinstance(t, dict) and t.get("role") == "prompt")]
    lines += [f"> {_turn_text(t)}" for t in turns]
    return "\n>\n".join(lines)


def rollouts_markdown(runs: dict[str, Path], transcripts: int = 2) -> str:
    """A table per run of each evaluation (tag, EM, searches, answered, top answers; the whole test split),
    then `transcripts` episodes of its first and last evaluation (the prompt left out: the
    question is shown). `runs` maps a label to a run directory."""
    out = []
    for label, run_dir in runs.items():
        files = eval_files(run_dir)
        if not files:
            continue
        out.append(f"## {label}\n")
        out.append("| eval | episodes | test EM | searches / episode | answered | most frequent answers (share) |")
        out.append("|---|---|---|---|---|---|")
        for path in files:
            s = eval_summary(read_episodes(path))
            top = "; ".join(f"{a!r} {share:.0%}" for a, share in s["top_answers"]) or "-"
            out.append(
                f"| {path.stem} | {s['episodes']} | {s['em']:.2f} | {s['searches']:.2f} | {s['answered']:.0%} | {top} |"
            )
        for path in dict.fromkeys([files[0], files[-1]]):
            out.append(f"\nTranscripts, `{path.stem}`:\n")
            out += [transcript_markdown(row) + "\n" for row in read_episodes(path)[:transcripts]]
        out.append("")
    return "\n".join(out)
