"""`agent-server demo`: the retrieval server on the embedded world, end to end.

Builds the embedded world and its indexes (first run only), starts `agent-server retriever` for
BM25, dense and hybrid in turn, sends real questions from the test split over HTTP, and prints
what came back and each backend's recall@3 on the single-hop questions.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from search_env.answers import normalize_answer
from search_env.corpus import split_contents
from search_env.qa_data import QARecord, load_qa
from search_env.retrieval_eval import supporting_recall
from search_env.retriever_client import RetrieverClient
from search_env.server_process import ServerProcess
from search_env.world.store import ensure_world

console = Console()


def _wait(server: ServerProcess) -> float:
    """Seconds until the server is ready, showing its latest log line meanwhile."""
    began = time.perf_counter()
    with console.status(f"loading indexes (the first run builds them; log: {server.log_path})") as status:
        while True:
            try:
                server.wait_ready(timeout=1.0)
                return time.perf_counter() - began
            except TimeoutError:
                lines = server.log_tail(1).strip()
                if lines:
                    status.update(f"[dim]{lines[-120:]}[/]")


def _answer_found(record: QARecord, contents: list[str]) -> bool:
    text = normalize_answer(" ".join(contents))
    return any(normalize_answer(g) in text for g in record.golden_answers)


def _show(backend: str, client: RetrieverClient, samples: list[QARecord]) -> None:
    results = client.retrieve([r.question for r in samples], topk=3)
    table = Table(title=f"{backend}: top-3 passages", show_lines=True)
    table.add_column("question (hops) / gold", max_width=48)
    table.add_column("retrieved titles (score)", max_width=60)
    table.add_column("gold in passages?")
    for record, docs in zip(samples, results, strict=True):
        titles = "\n".join(f"{split_contents(d.document.contents)[0]} ({d.score:.2f})" for d in docs)
        found = _answer_found(record, [d.document.contents for d in docs])
        table.add_row(
            f"{record.question} ({record.metadata.get('hops')})\n[green]{record.golden_answers[0]}[/]",
            titles,
            "[green]yes[/]" if found else "[yellow]no[/]",
        )
    console.print(table)


def run_demo(world_name: str = "default", backends: tuple[str, ...] = ("bm25", "dense", "hybrid")) -> None:
    log_dir = Path("runs/demo")
    log_dir.mkdir(parents=True, exist_ok=True)
    world = ensure_world(world_name)
    test = load_qa(world.qa["test"])
    single = [r for r in test if r.metadata["hops"] == 1]
    samples = [next(r for r in test if r.metadata["hops"] == h) for h in (1, 2, 3)]
    console.print(f"[bold]embedded world '{world_name}'[/]: {world.corpus}, {len(test)} test questions")

    summary = Table(title=f"recall@3 on the {len(single)} single-hop test questions")
    for col in ("backend", "recall@3", "ready after", "queries/s (one batch)"):
        summary.add_column(col)
    for backend in backends:
        args = ["retriever", "--backend", backend, "--world", world_name]
        server = ServerProcess(args, log_dir / f"retriever-{backend}.log").start()
        try:
            ready = _wait(server)
            console.print(f"[bold]{backend}[/] server ready at {server.url} after {ready:.1f}s")
            with RetrieverClient(server.url, timeout=600) as client:
                _show(backend, client, samples)
                began = time.perf_counter()
                recall = supporting_recall(single, client.retrieve([r.question for r in single], topk=3))
                qps = len(single) / (time.perf_counter() - began)
                summary.add_row(backend, f"{recall:.3f}", f"{ready:.1f}s", f"{qps:.0f}")
        finally:
            server.stop()
    console.print(summary)


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="build the embedded world's indexes, serve them, query them")
    p.add_argument("--world", default="default")
    p.add_argument("--backends", default="bm25,dense,hybrid")


def run_demo_args(args: argparse.Namespace) -> None:
    run_demo(args.world, tuple(args.backends.split(",")))
