"""`agent-server index`: build a BM25 (pyserini Lucene) or dense (faiss) index from a corpus."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path


def add_index_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "index",
        help="build a BM25 or dense index from a wiki-18 JSONL corpus",
        description="Build a BM25 (pyserini Lucene) or dense (faiss) index from a wiki-18 JSONL corpus "
        '({"id": ..., "contents": "\\"Title\\"\\ntext"} a line; .jsonl or .jsonl.gz).',
    )
    parser.add_argument("--backend", choices=["bm25", "dense"], required=True)
    parser.add_argument("--corpus", type=Path, required=True, help="corpus file (.jsonl or .jsonl.gz)")
    parser.add_argument("--out", type=Path, required=True, help="index folder to create (must not exist)")
    parser.add_argument("--encoder", default=None,
                        help="dense: sentence-transformers name or path (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--index-type", default="Flat",
                        help="dense: Flat (exact), HNSW32, IVF4096,Flat, or any faiss index_factory string")
    parser.add_argument("--batch-size", type=int, default=64, help="dense: passages per encoder batch")
    parser.add_argument("--device", default=None, help="dense: torch device (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=2, help="bm25: indexing threads")
    parser.set_defaults(func=run_index)
    return parser


def run_index(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    if args.backend == "bm25":
        from agent_server.backends.bm25 import build_bm25_index

        out = build_bm25_index(args.corpus, args.out, threads=args.threads)
        what = "BM25 (Lucene)"
    else:
        from agent_server.backends.dense import build_dense_index

        out = build_dense_index(args.corpus, args.out, encoder=args.encoder, index_type=args.index_type,
                                batch_size=args.batch_size, device=args.device)
        what = f"dense ({args.index_type}, encoder {args.encoder or 'all-MiniLM-L6-v2'})"
    print(f"built {what} index of {args.corpus} at {out} in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (`python -m agent_server.index_cli ...`), mirroring the subcommand."""
    parser = argparse.ArgumentParser(prog="agent-server")
    add_index_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
