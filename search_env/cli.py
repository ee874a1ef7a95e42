"""`search-env`: command line of the environment suite.

Subcommands: `world` writes the embedded world's corpus and QA files; `eval` runs the benchmark
harness (search_env.evaluation) on any policy.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

from search_env.evaluation.command import add_eval_parser
from search_env.world import WORLD_PRESETS, WorldPaths, ensure_world, write_world


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="search-env", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    world = commands.add_parser("world", help="write the embedded world's corpus and train/dev/test QA files")
    world.add_argument("--preset", default="default", choices=sorted(WORLD_PRESETS),
                       help="world size (default: %(default)s)")
    world.add_argument("--seed", type=int, default=None, help="generator seed (default: the preset's)")
    world.add_argument("--out", type=Path, default=None,
                       help="folder to write into (default: the cache under $SEARCHGYM_HOME/worlds, reused)")
    world.set_defaults(func=_world)

    add_eval_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request drowns the progress
    return int(args.func(args) or 0)


def _world(args: argparse.Namespace) -> int:
    if args.out is not None:
        paths = write_world(args.preset, args.out, seed=args.seed)
    else:
        paths = ensure_world(args.preset, seed=args.seed)
    _print_world(paths)
    return 0


def _print_world(paths: WorldPaths) -> None:
    info = paths.info()
    counts = info["counts"]
    print(f"world {info['name']} (version {info['version']}, seed {info['config']['seed']}, "
          f"fingerprint {paths.fingerprint}) in {paths.root}")
    print(f"  corpus  {paths.corpus}  {counts['passages']} passages")
    for split, path in paths.qa.items():
        print(f"  {split:<7} {path}  {counts[split]} questions")


if __name__ == "__main__":
    raise SystemExit(main())
