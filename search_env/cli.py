"""`search-env`: command line of the environment suite.

Subcommands: `world` writes the embedded world's corpus and QA files; `eval` runs the benchmark
harness (search_env.evaluation) on any policy; `download` fetches Search-R1's wiki-18 corpus, indexes
and QA sets from the Hugging Face Hub (search_env.hub_download).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from search_env.evaluation.command import add_eval_parser
from search_env.evaluation.datasets import EvalDataError
from search_env.hub_download import DEFAULT_FILE_DEADLINE
from search_env.world import WORLD_PRESETS, WorldPaths, ensure_world, write_world
from search_env.world_pairing import WorldMismatch


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search-env", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    world = commands.add_parser("world", help="write the embedded world's corpus and train/dev/test QA files")
    world.add_argument(
        "--preset", default="default", help=f"world size: {', '.join(sorted(WORLD_PRESETS))} (default: %(default)s)"
    )
    world.add_argument("--seed", type=int, default=None, help="generator seed (default: the preset's)")
    world.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder to write into (default: the cache under $SEARCHGYM_HOME/worlds, reused)",
    )
    world.set_defaults(func=_world)

    add_eval_parser(commands)

    download = commands.add_parser(
        "download",
        help="fetch Search-R1's wiki-18 corpus, BM25 / e5 indexes and QA sets from the Hugging Face Hub",
        description="Fetch Search-R1's data from the Hugging Face Hub (HF_ENDPOINT and HF_TOKEN respected), "
        "resuming interrupted files and checking every file against the hub's hashes. "
        "Assets: corpus, bm25, e5, qa, or all; none named: corpus bm25 qa. --list shows sizes.",
    )
    download.add_argument("assets", nargs="*", metavar="ASSET", help="corpus, bm25, e5, qa or all")
    download.add_argument("--out", type=Path, default=None, help="default: $SEARCHGYM_HOME/wiki-18")
    download.add_argument("--revision", default="main", help="branch, tag or commit of each repo (default: main)")
    download.add_argument("--endpoint", default=None, help="a Hub mirror (default: $HF_ENDPOINT or huggingface.co)")
    download.add_argument("--list", action="store_true", help="print the assets and their sizes, fetch nothing")
    download.add_argument(
        "--file-deadline",
        type=_positive_seconds,
        default=DEFAULT_FILE_DEADLINE,
        metavar="SECONDS",
        help="give a file up after this long, retries included; its .part is kept (default: %(default)g, six hours)",
    )
    download.set_defaults(func=_download)
    return parser


def _positive_seconds(text: str) -> float:
    """argparse type of `--file-deadline`: a finite number of seconds above 0 (ArgumentTypeError if not)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be above 0 and finite, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    try:
        return int(args.func(args) or 0)
    except (EvalDataError, WorldMismatch, UnknownWorld) as err:  # a user's mistake: one line, no traceback
        print(f"search-env {args.command}: {err}", file=sys.stderr)
        return 2


class UnknownWorld(ValueError):
    """A world preset that does not exist."""


def _world(args: argparse.Namespace) -> int:
    if args.preset not in WORLD_PRESETS:
        raise UnknownWorld(f"unknown world preset {args.preset!r}; known: {', '.join(sorted(WORLD_PRESETS))}")
    if args.out is not None:
        paths = write_world(args.preset, args.out, seed=args.seed)
    else:
        paths = ensure_world(args.preset, seed=args.seed)
    _print_world(paths)
    return 0


def _download(args: argparse.Namespace) -> int:
    import os
    import sys

    from search_env.hub_download import (
        DownloadError,
        default_out,
        describe_assets,
        disk_needed,
        download_asset,
        resolve_assets,
    )

    if args.list:
        print(describe_assets())
        return 0
    out = args.out or default_out()
    try:
        assets = resolve_assets(args.assets)
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
            raise DownloadError("HF_HUB_OFFLINE is set: downloads are off (run with HF_HUB_OFFLINE=0)")
        print(f"into {out} ({disk_needed(out)} free): {', '.join(a.name for a in assets)}")
        folders = [
            download_asset(a, out, endpoint=args.endpoint, revision=args.revision, file_deadline=args.file_deadline)
            for a in assets
        ]
    except DownloadError as err:
        print(f"search-env download: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("search-env download: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    for folder in folders:
        print(folder)
    return 0


def _print_world(paths: WorldPaths) -> None:
    info = paths.info()
    counts = info["counts"]
    print(
        f"world {info['name']} (version {info['version']}, seed {info['config']['seed']}, "
        f"fingerprint {paths.fingerprint}) in {paths.root}"
    )
    print(f"  corpus  {paths.corpus}  {counts['passages']} passages")
    for split, path in paths.qa.items():
        print(f"  {split:<7} {path}  {counts[split]} questions")


if __name__ == "__main__":
    raise SystemExit(main())
