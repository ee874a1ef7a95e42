"""`agent-server index`: build a BM25 (pyserini Lucene) or dense (faiss) index from a corpus."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from agent_server.backends.names import INDEX_BACKENDS
from agent_server.encoder import ENCODE_DTYPES
from search_env.bad_records import BadRecordError
from search_env.corpus_validation import validate_corpus


def add_index_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "index",
        help="build a BM25 or dense index from a wiki-18 JSONL corpus",
        description="Build a BM25 (pyserini Lucene, or bm25s) or dense (faiss) index from a wiki-18 JSONL corpus "
        '({"id": ..., "contents": "\\"Title\\"\\ntext"} a line; .jsonl or .jsonl.gz).',
    )
    parser.add_argument("--backend", choices=INDEX_BACKENDS, required=True)
    parser.add_argument("--corpus", type=Path, required=True, help="corpus file (.jsonl or .jsonl.gz)")
    parser.add_argument("--out", type=Path, required=True, help="index folder to create (must not exist)")
    parser.add_argument("--encoder", default=None,
                        help="dense: sentence-transformers name or path (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--index-type", default="Flat",
                        help="dense: Flat (exact), HNSW32, IVF4096,Flat, or any faiss index_factory string")
    parser.add_argument("--batch-size", type=int, default=64, help="dense: passages per encoder batch")
    parser.add_argument("--device", default=None, help="dense: torch device (default: cuda if available)")
    parser.add_argument("--encode-dtype", choices=ENCODE_DTYPES, default="fp32",
                        help="dense: passage encoder precision (default fp32, so an index is the same on every "
                        "machine; auto: as the retriever's --encode-dtype auto)")
    parser.add_argument("--threads", type=int, default=2, help="bm25: indexing threads")
    parser.add_argument("--skip-bad-lines", action="store_true",
                        help="index the good lines of a corpus with bad ones, and report how many were skipped "
                        "(default: stop at the first bad line, naming it)")
    parser.set_defaults(func=run_index)
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run_index(args: argparse.Namespace) -> int:
    """Build the index; 0 when built. A failed or interrupted build prints one line and raises SystemExit
    (1: failed, 130: SIGINT/SIGTERM) after its indexer subprocess is ended and its partial folder removed
    (a dense build keeps its partial encoding: the next build of the same --out resumes it)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # SIGTERM's default kills without running `finally`: make it unwind like Ctrl-C instead (signal
    # handlers can only be set from the main thread).
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main else None
    try:
        return _build(args)
    except KeyboardInterrupt:
        print(f"agent-server index: interrupted; no index at {args.out}", file=sys.stderr)
        raise SystemExit(130) from None
    except BadRecordError as err:
        print(f"agent-server index: bad corpus line: {err} (--skip-bad-lines indexes the rest)", file=sys.stderr)
        raise SystemExit(1) from None
    except (OSError, RuntimeError, ValueError) as err:
        print(f"agent-server index: failed: {type(err).__name__}: {err}", file=sys.stderr)
        raise SystemExit(1) from None
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _build(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    # Checked here first so the report comes before the build; the builder finds the result cached.
    check = validate_corpus(args.corpus, skip_bad_lines=args.skip_bad_lines)
    if check.skipped:
        print(f"agent-server index: {check.report()}", file=sys.stderr)
    if args.backend == "bm25":
        from agent_server.backends.bm25 import build_bm25_index

        out = build_bm25_index(args.corpus, args.out, threads=args.threads, skip_bad_lines=args.skip_bad_lines)
        what = "BM25 (Lucene)"
    elif args.backend == "bm25s":
        from agent_server.backends.bm25s_engine import build_bm25s_index

        out = build_bm25s_index(args.corpus, args.out, skip_bad_lines=args.skip_bad_lines)
        what = "BM25 (bm25s)"
    else:
        from agent_server.backends.dense import build_dense_index

        out = build_dense_index(args.corpus, args.out, encoder=args.encoder, index_type=args.index_type,
                                batch_size=args.batch_size, device=args.device, dtype=args.encode_dtype,
                                skip_bad_lines=args.skip_bad_lines)
        what = f"dense ({args.index_type}, encoder {args.encoder or 'all-MiniLM-L6-v2'})"
    skipped = f", {check.skipped} bad line(s) skipped" if check.skipped else ""
    print(f"built {what} index of {args.corpus} ({check.passages} passages{skipped}) at {out} "
          f"in {time.perf_counter() - started:.1f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point (`python -m agent_server.index_cli ...`), mirroring the subcommand."""
    parser = argparse.ArgumentParser(prog="agent-server")
    add_index_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
