"""Do the Lucene (pyserini) and bm25s backends return the same passages? Both in process, on train questions.

For each world: every distinct train question (or the first `--questions`) searched top-10 on both
backends (the cached indexes of the world's corpus, built on first use), then:
  - top-1 / top-3 identical: share of questions whose first 1 / 3 passage ids are the same, in order;
  - top-3 / top-10 overlap: mean |ids of one ∩ ids of the other| / k;
  - answer in top-3: share of questions with a gold answer in the contents of its top 3 (subem, the
    project's normalisation), for each backend;
  - score ratio: median bm25s / Lucene score of the two top-1 hits of the same passage.
Lucene stores each passage length in one byte (SmallFloat), bm25s keeps it exact, so near ties can swap.

    python benchmarks/bm25_agreement.py --worlds default,large
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent_server.embedded_indexes import load_retriever  # noqa: E402
from search_env.answers import subem_check  # noqa: E402
from search_env.qa_data import load_qa  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402

K = 10


def agreement(world: str, questions: int | None, batch: int = 512) -> dict[str, float]:
    paths = ensure_world(world)
    records = list({r.question: r for r in load_qa(paths.qa["train"])}.values())[:questions]
    lucene = load_retriever("bm25", corpus=paths.corpus)
    fast = load_retriever("bm25s", corpus=paths.corpus)
    rows: dict[str, list] = {"bm25": [], "bm25s": []}
    for start in range(0, len(records), batch):
        chunk = [r.question for r in records[start : start + batch]]
        rows["bm25"] += lucene.search(chunk, K)
        rows["bm25s"] += fast.search(chunk, K)
    lucene.close()
    fast.close()
    n = len(records)
    ids = {name: [[h.id for h in row] for row in found] for name, found in rows.items()}
    pairs = list(zip(ids["bm25"], ids["bm25s"], strict=True))
    ratios = [
        b[0].score / a[0].score
        for a, b in zip(rows["bm25"], rows["bm25s"], strict=True)
        if a and b and a[0].id == b[0].id and a[0].score > 0
    ]

    def answer_rate(name: str) -> float:
        return (
            sum(
                subem_check(" ".join(h.contents for h in row[:3]), r.golden_answers)
                for row, r in zip(rows[name], records, strict=True)
            )
            / n
        )

    return {
        "questions": n,
        "top1_identical": sum(a[:1] == b[:1] for a, b in pairs) / n,
        "top3_identical": sum(a[:3] == b[:3] for a, b in pairs) / n,
        "top3_overlap": statistics.mean(len(set(a[:3]) & set(b[:3])) / 3 for a, b in pairs),
        "top10_overlap": statistics.mean(len(set(a) & set(b)) / K for a, b in pairs),
        "answer_top3_lucene": answer_rate("bm25"),
        "answer_top3_bm25s": answer_rate("bm25s"),
        "score_ratio_median": statistics.median(ratios) if ratios else float("nan"),
        "empty_rows_lucene": sum(not row for row in rows["bm25"]),
        "empty_rows_bm25s": sum(not row for row in rows["bm25s"]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worlds", default="default,large")
    p.add_argument("--questions", type=int, help="first N distinct train questions (default: all)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    figures = {w: agreement(w, args.questions) for w in args.worlds.split(",")}
    table = Table(title="Lucene (pyserini) vs bm25s, train questions, top-10 in process")
    table.add_column("figure")
    for w in figures:
        table.add_column(w, justify="right")
    for key in next(iter(figures.values())):
        cells = [figures[w][key] for w in figures]
        table.add_row(key, *(f"{c:.4f}" if isinstance(c, float) else str(c) for c in cells))
    Console(width=120).print(table)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
