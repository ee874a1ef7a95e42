"""`search-trainer demo`: the embedded default run, end to end on a laptop CPU.

Starts a BM25 retrieval server over the embedded world and an env server in front of it, builds the
embedded tiny policy (tokenizer + small transformer, warm-started by SFT on scripted searches), then
trains it with GRPO+LLDS through the env server, evaluating on the held-out test split before and
after, and prints both tables and the path of the diagnostics plot.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from search_env.server_process import ServerProcess
from trainer.shipped_configs import shipped_config


def run_demo(args: argparse.Namespace, run_train: Callable[[argparse.Namespace], int]) -> int:
    """Start the servers, then `run_train(args)` (the `train` command's, passed in by trainer.cli so this
    module does not import the CLI back) with their URLs and the embedded config."""
    log_dir = Path(args.out_dir or "runs/demo")
    log_dir.mkdir(parents=True, exist_ok=True)
    retriever = ServerProcess(
        ["retriever", "--backend", "bm25", "--world", args.world], log_dir / "retriever.log"
    ).start()
    env_server = None
    try:
        print(f"starting the retrieval server over world '{args.world}' (log: {retriever.log_path})...")
        retriever.wait_ready(timeout=1800)
        env_server = ServerProcess(["env", "--retriever-url", retriever.url], log_dir / "env-server.log").start()
        env_server.wait_ready(timeout=120)
        print(f"retriever {retriever.url}, env server {env_server.url}")
        args.config = args.config or shipped_config("embedded.yaml")
        # The live servers first: the config file and the caller's flags set everything else.
        args.overrides = [
            f"env.retriever_url={retriever.url}",
            f"env.env_url={env_server.url}",
            f"env.data=world:{args.world}",
            *args.overrides,
        ]
        return run_train(args)
    finally:
        if env_server is not None:
            env_server.stop()
        retriever.stop()
