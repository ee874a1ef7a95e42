"""`search-env eval`: run the benchmark harness from the command line.

    search-env eval --policy scripted --data world:default --retriever-url http://127.0.0.1:8000
    search-env eval --policy openai --model Qwen/Qwen2.5-3B-Instruct --base-url http://127.0.0.1:8001/v1 \\
        --data nq --data hotpotqa --limit 500 --concurrency 32 --with-reference

Hugging Face models are benchmarked by `search-trainer eval --model NAME_OR_PATH` (same data, env and
output options): the trainer plays them token by token, as it trains them.

A slow or failing endpoint does not end the run: each request has `--request-timeout` seconds and
`--retries` more attempts (jittered backoff, all requests pausing together so a one-request server
catches up); an episode that still fails is recorded as failed (the table's `failed` column, scored
0) and the run goes on, until `--max-consecutive-failures` fail in a row. The table and the summary
are written however the run ends, Ctrl-C included (exit 130; 1 when stopped by failures).

Reference rows (a scripted policy on the same questions: `scripted` answers the top passage's title,
`scripted-entity` the best-matching name) are opt-in with `--with-reference [scripted|scripted-entity]`:
they cost one search per question, which matters on the 51k-question Search-R1 sets.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from search_env.evaluation.benchmark import BenchmarkInterrupted, BenchmarkStopped, run_benchmark
from search_env.evaluation.datasets import parse_data_specs
from search_env.evaluation.openai_policy import DEFAULT_BASE_URL
from search_env.evaluation.policy import EpisodePlayer, Policy, close_policy
from search_env.evaluation.scripted import ScriptedPolicy
from search_env.evaluation.table import render_table
from search_env.search_qa_env import DEFAULT_RETRIEVER_URL
from search_env.threads import SERVER_DEFAULT, apply_threads
from search_env.turn_budget import TurnBudgetError, check_turn_budget
from search_env.world_pairing import check_world_sets

POLICIES = ("scripted", "scripted-entity", "openai")
DEFAULT_DATA = "world:default"


def add_eval_parser(commands: Any) -> None:
    p = commands.add_parser(
        "eval",
        help="benchmark a policy on the world or the Search-R1 evaluation sets",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--policy",
        choices=POLICIES,
        default="scripted",
        help="scripted: search the question, answer the top title (no model); scripted-entity: "
        "answer the best-matching name instead; openai: an OpenAI-compatible endpoint "
        "(Hugging Face models: search-trainer eval)",
    )
    p.add_argument("--model", help="model name (openai)")
    p.add_argument(
        "--base-url",
        help=f"OpenAI-compatible base URL incl. /v1 (default: $OPENAI_BASE_URL or {DEFAULT_BASE_URL}, "
        "llama.cpp's llama-server; vLLM serves on :8000, the retriever's port here: pass it)",
    )
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="env var holding the API key")
    p.add_argument(
        "--mode",
        choices=["chat", "completions"],
        default="chat",
        help="prompting: chat messages, or one Search-R1 style text (default: %(default)s)",
    )
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=500, help="tokens per turn (Search-R1: 500)")
    p.add_argument(
        "--request-timeout",
        type=_positive_float,
        default=120.0,
        help="openai: seconds each request may take (connect, send, each read) (default: %(default)s)",
    )
    p.add_argument(
        "--retries",
        type=_non_negative_int,
        default=3,
        help="openai: more attempts after a timeout, connection error, 408/409/429 or 5xx, with jittered "
        "exponential backoff from 1 s up to 30 s, each up to a quarter longer at random (default: %(default)s)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        help=f"torch/OpenMP threads of this process (default {SERVER_DEFAULT}: it waits on HTTP; see README, Threads)",
    )
    add_benchmark_args(p)
    p.set_defaults(func=run_eval_command)


def add_benchmark_args(p: argparse.ArgumentParser) -> None:
    """What to play on, where, and where the results go: shared by `search-env eval` and
    `search-trainer eval`."""
    p.add_argument(
        "--data",
        action="append",
        default=None,
        metavar="SPEC",
        help=f"repeatable: world[:preset[:single|:multi]], nq, triviaqa, popqa, hotpotqa, "
        f"2wikimultihopqa, musique, bamboogle, search-r1 (all seven), a QA file, or a HF name; "
        f"SPEC@split picks a split (default: {DEFAULT_DATA})",
    )
    p.add_argument("--split", help="split for every set without @split (default: each set's own)")
    p.add_argument("--limit", type=int, help="questions per data set (default: all)")
    p.add_argument("--seed", type=int, help="with --limit: draw the questions at random with this seed")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--retriever-url",
        default=DEFAULT_RETRIEVER_URL,
        help="retrieval server for in-process envs, or several replicas comma-separated (default: %(default)s)",
    )
    where.add_argument(
        "--env-url",
        help="run episodes as sessions of this env server (RemoteSearchQA-v0), or of several comma-separated",
    )
    p.add_argument("--max-turns", type=_turn_budget, default=4, help="turns per episode (default: %(default)s)")
    p.add_argument("--topk", type=int, default=3, help="passages per search (default: %(default)s)")
    p.add_argument(
        "--concurrency",
        type=_positive_int,
        default=None,
        help="episodes at once, so requests in flight to an endpoint (default: 16 for openai, 4 scripted; "
        "1 suits a server that handles one request at a time)",
    )
    p.add_argument(
        "--max-consecutive-failures",
        type=_positive_int,
        default=10,
        help="stop the run (table and summary still written) after this many failed episodes in a row "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--with-reference",
        nargs="?",
        const="scripted",
        choices=["scripted", "scripted-entity"],
        default=None,
        help="also run a scripted reference policy (default: scripted) on the same questions: extra rows",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="episodes JSONL (default: runs/eval/<policy>-<time>.jsonl); aggregates go to <out>.summary.json",
    )
    p.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="leave out the bad records of a local QA file, counted in a warning (default: stop, naming "
        "the first by file and line or row)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_policy(args: argparse.Namespace) -> Policy:
    if args.policy in ("scripted", "scripted-entity"):
        return _scripted(args.policy)
    if not args.model:
        raise SystemExit("--policy openai needs --model")
    from search_env.evaluation.openai_policy import OpenAIPolicy

    return OpenAIPolicy(
        args.model,
        args.base_url,
        mode=args.mode,
        api_key_env=args.api_key_env,
        temperature=args.temperature,
        max_tokens=args.max_new_tokens,
        timeout=args.request_timeout,
        retries=args.retries,
    )


def _scripted(name: str) -> ScriptedPolicy:
    return ScriptedPolicy("title" if name == "scripted" else "entity")


def run_eval_command(args: argparse.Namespace) -> int:
    apply_threads(args.threads, default=SERVER_DEFAULT)
    policy = build_policy(args)
    return run_benchmark_command(policy, args, label=args.policy, concurrency=16 if args.policy == "openai" else 4)


def run_benchmark_command(
    policy: Policy | EpisodePlayer,
    args: argparse.Namespace,
    *,
    label: str,
    concurrency: int,
    env_options: dict[str, Any] | None = None,
) -> int:
    """Benchmark `policy` as `add_benchmark_args`' options say (`concurrency` unless --concurrency
    is given), print the table, and close the policy. Returns 0 when every episode was played (failed
    ones included), 1 when the run stopped early, 130 on Ctrl-C: the table and summary of what was
    played are printed and written in every case."""
    # A bad spec raises EvalDataError: the command's main prints it as one line (exit 2).
    sets = parse_data_specs(args.data or [DEFAULT_DATA], args.split)
    if not args.env_url:  # in-process envs: their retriever must serve the worlds asked for
        check_world_sets(sets, args.retriever_url)
    reference = _scripted(args.with_reference) if args.with_reference and args.with_reference != label else None
    out = args.out or Path("runs/eval") / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"

    async def run() -> Any:
        try:
            return await run_benchmark(
                policy,
                sets,
                retriever_url=args.retriever_url,
                env_url=args.env_url,
                max_turns=args.max_turns,
                topk=args.topk,
                concurrency=args.concurrency or concurrency,
                limit=args.limit,
                seed=args.seed,
                reference=reference,
                out=out,
                progress=not args.no_progress,
                env_options=env_options,
                max_consecutive_failures=args.max_consecutive_failures,
                skip_bad_lines=args.skip_bad_lines,
            )
        finally:
            await close_policy(policy)

    code = 0
    try:
        result = asyncio.run(run())
    except BenchmarkInterrupted as stop:
        result, code = stop.result, 130
    except BenchmarkStopped as stop:
        result, code = stop.result, 1
    if result.metrics:
        print(render_table(result.metrics, title=f"searchgym eval ({result.seconds:.1f} s)"), end="")
    failed = sum(m.failed for m in result.metrics)
    if failed:
        print(f"failed episodes: {failed} (scored 0; their errors are in the episodes file)")
    print(f"episodes: {result.out}\nsummary:  {result.summary}")
    if result.stopped:
        print(f"search-env eval: stopped: {result.stopped}", file=sys.stderr)
    return code


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def _turn_budget(text: str) -> int:
    """--max-turns through the one turn-budget check (search_env.turn_budget), so it refuses what the env does."""
    try:
        value: Any = int(text)
    except ValueError:
        value = text
    try:
        return check_turn_budget(value)
    except TurnBudgetError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value
