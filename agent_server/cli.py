"""`agent-server`: build indexes (`index`) and serve retrieval (`retriever`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from agent_server.backends.names import RETRIEVER_BACKENDS, builds_missing_index
from agent_server.encoder import ENCODE_DTYPES
from agent_server.serving.auth import token_from_env, tokens_from_env
from agent_server.serving.connection_limits import ConnectionLimits, uvicorn_settings
from agent_server.serving.request_body import BodyLimits, items_for
from search_env.retrieval_schema import RetrievalLimits
from search_env.threads import SERVER_DEFAULT as SERVER_THREADS
from search_env.threads import apply_threads

log = logging.getLogger("agent_server")

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _positive(kind: type[int] | type[float]):
    def parse(text: str) -> int | float:
        value = kind(text)
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _add_server_args(p: argparse.ArgumentParser, port: int) -> None:
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=port)
    p.add_argument(
        "--replica-id",
        help="this server's name among its replicas, in /info and every answer's X-Replica-Id header "
        "(default HOST:PORT, the machine's host name for a wildcard HOST)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument(
        "--log-file",
        type=Path,
        help="the full log, the libraries' start-up messages included "
        "(default: $SEARCHGYM_HOME/logs/agent-server-<command>.log)",
    )
    # Hostile requests (agent_server.serving: request_guard, connection_limits): the same on both servers.
    body, conn = BodyLimits(), ConnectionLimits()
    g = p.add_argument_group("request limits", "each refusal is a 4xx (or 408) with a message")
    g.add_argument("--max-body-bytes", type=_positive(int), default=body.max_bytes, help="413 past it, read no further")
    g.add_argument("--max-json-depth", type=_positive(int), default=body.max_depth, help="arrays/objects nested")
    g.add_argument(
        "--max-json-items",
        type=_positive(int),
        help="values in one body, 413 past it (default: 4 per query or step of the largest request, plus 1024)",
    )
    g.add_argument(
        "--body-timeout",
        type=_positive(float),
        default=body.read_timeout_s,
        help="seconds from the end of the headers to the end of the body (408 past it)",
    )
    g.add_argument(
        "--header-timeout",
        type=_positive(float),
        default=conn.head_timeout_s,
        help="seconds for a request's line and headers to arrive (408 past it)",
    )
    g.add_argument(
        "--keep-alive-timeout",
        type=_positive(float),
        default=conn.keep_alive_s,
        help="seconds an idle connection is kept between requests",
    )
    g.add_argument(
        "--max-header-bytes", type=_positive(int), default=conn.max_head_bytes, help="request line and headers (400)"
    )


def _body_limits(args: argparse.Namespace, batch: int) -> BodyLimits:
    return BodyLimits(
        max_bytes=args.max_body_bytes,
        max_depth=args.max_json_depth,
        max_items=args.max_json_items or items_for(batch),
        read_timeout_s=args.body_timeout,
    )


def replica_id(args: argparse.Namespace) -> str:
    """--replica-id, or HOST:PORT: the host name where HOST binds every address (0.0.0.0, ::), so replicas
    on several machines still differ."""
    if args.replica_id:
        return args.replica_id
    import socket

    host = socket.gethostname() if args.host in ("0.0.0.0", "::", "") else args.host
    return f"{host}:{args.port}"


def _serve(app, args: argparse.Namespace) -> None:
    import uvicorn

    connection = ConnectionLimits(
        head_timeout_s=args.header_timeout, keep_alive_s=args.keep_alive_timeout, max_head_bytes=args.max_header_bytes
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        access_log=False,
        **uvicorn_settings(connection),
    )


def _add_retriever_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "retriever",
        help="serve Search-R1 compatible /retrieve",
        description="Serve /retrieve. With no index given, serves the embedded world, building its "
        "indexes on first use into $SEARCHGYM_HOME. Set SEARCHGYM_API_TOKEN to require a bearer token.",
    )
    p.add_argument(
        "--backend",
        choices=RETRIEVER_BACKENDS,
        default="bm25",
        help="bm25: Lucene (pyserini); bm25s: the same BM25 in Python (bm25s + numba, no JVM); dense: faiss; "
        "hybrid: bm25 + dense fused by RRF",
    )
    p.add_argument(
        "--bm25-index",
        type=Path,
        help="a Lucene index directory (ours or a prebuilt one); with --backend bm25s, a bm25s index built by "
        "`agent-server index --backend bm25s`",
    )
    p.add_argument("--dense-index", type=Path, help="a dense index directory built by `agent-server index`")
    p.add_argument(
        "--corpus",
        type=Path,
        help="wiki-18 JSONL corpus: its indexes are built on first use when none is given; also the passage "
        "source of a prebuilt index that stores no raw documents",
    )
    p.add_argument("--encoder", help="sentence-transformers model name or path (default: packaged MiniLM)")
    p.add_argument("--world", default="default", help="embedded world preset served when no index is given")
    p.add_argument(
        "--skip-bad-lines",
        action="store_true",
        help="building from --corpus: index its good lines and log how many bad ones were skipped "
        "(default: fail naming the first bad line)",
    )
    p.add_argument(
        "--threads",
        type=_positive(int),
        help="CPU threads of torch intra-op (dense query encoding) and faiss/OpenMP "
        f"(default {SERVER_THREADS}: see README, Threads)",
    )
    # Lucene's batch search threads are Java threads, not torch's: a batch of queries is searched in
    # parallel at no per-query overhead, so they keep their own count (the measured figures used 2).
    p.add_argument(
        "--search-threads",
        type=_positive(int),
        default=2,
        help="BM25 batch search threads: pyserini batch_search (and index build) for bm25, numba for bm25s (default 2)",
    )
    g = p.add_argument_group("dense search", "faiss and query-encoder settings (dense and hybrid backends)")
    g.add_argument("--nprobe", type=_positive(int), help="IVF lists searched per query (faiss default 1)")
    g.add_argument("--ef-search", type=_positive(int), help="HNSW candidate list size (faiss default 16)")
    g.add_argument(
        "--encode-dtype",
        choices=ENCODE_DTYPES,
        default="auto",
        help="query encoder precision (auto: fp16 on CUDA; bf16-mixed on a CPU with AMX or "
        "AVX512-BF16, fp32 on other CPUs); indexes are built in fp32 whatever this is",
    )
    g.add_argument(
        "--faiss-gpu",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="put the faiss index on the GPUs (default: when faiss has GPU support and sees one)",
    )
    _add_server_args(p, 8000)
    d = RetrievalLimits()
    p.add_argument("--topk", type=int, default=d.default_topk, help="topk when a request gives none")
    p.add_argument("--max-topk", type=int, default=d.max_topk)
    p.add_argument("--max-queries", type=int, default=d.max_queries, help="queries in one request")
    p.add_argument(
        "--max-query-chars", type=int, default=d.max_query_chars, help="a longer query is searched on its first ones"
    )
    p.add_argument(
        "--max-query-terms",
        type=int,
        default=d.max_query_terms,
        help="a query of more distinct terms is searched on its first ones (Lucene's clause limit is 1024)",
    )
    p.add_argument(
        "--reject-empty-batch",
        action="store_true",
        help="answer `queries: []` with 422 (default: an empty result, as Search-R1's trainer needs)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse an awkward query (too long, too many terms, a lone surrogate) with 422 instead of "
        "repairing it and searching",
    )
    p.add_argument("--cache-size", type=int, default=100_000, help="LRU result cache entries (0: off)")
    p.add_argument("--coalesce-max-batch", type=int, default=1024, help="queries per coalesced batch")
    p.add_argument("--coalesce-wait-ms", type=float, default=1.0, help="how long to gather concurrent requests")
    p.add_argument(
        "--max-chunk-queries",
        type=int,
        default=256,
        help="most queries in one backend call: a larger request is searched in chunks that interleave "
        "with other requests, so one query never waits for a whole large batch (0: unlimited)",
    )


def _retriever_loader(args: argparse.Namespace):
    """What the server calls in its loading thread: heavy imports and index builds happen there."""

    def load():
        from agent_server.embedded_indexes import load_retriever

        corpus = args.corpus
        if corpus is None and builds_missing_index(args.backend, args.bm25_index, args.dense_index):
            from search_env.world.store import ensure_world

            corpus = ensure_world(args.world).corpus
            log.info("serving the embedded world %r (%s)", args.world, corpus)
        # Missing indexes are built from the corpus on first use, into $SEARCHGYM_HOME, and reused.
        return load_retriever(
            args.backend,
            bm25_index=args.bm25_index,
            dense_index=args.dense_index,
            corpus=corpus,
            encoder=args.encoder,
            threads=args.search_threads,
            skip_bad_lines=args.skip_bad_lines,
            nprobe=args.nprobe,
            ef_search=args.ef_search,
            encode_dtype=args.encode_dtype,
            faiss_gpu=args.faiss_gpu,
        )

    return load


def run_retriever(args: argparse.Namespace) -> None:
    from agent_server.retrieval.app import create_retrieval_app
    from agent_server.startup_checks import StartupError, check_retriever_args

    try:
        check_retriever_args(args.backend, args.world, args.bm25_index, args.dense_index, args.corpus)
    except StartupError as err:
        print(f"agent-server retriever: {err}", file=sys.stderr)
        raise SystemExit(2) from None

    args.threads = apply_threads(args.threads, default=SERVER_THREADS).threads
    token = token_from_env()
    if args.host not in LOOPBACK and not token:
        log.warning("binding %s without SEARCHGYM_API_TOKEN: anyone who reaches it can query", args.host)
    limits = RetrievalLimits(
        default_topk=args.topk,
        max_topk=args.max_topk,
        max_queries=args.max_queries,
        max_query_chars=args.max_query_chars,
        max_query_terms=args.max_query_terms,
        max_body_bytes=args.max_body_bytes,
        allow_empty_batch=not args.reject_empty_batch,
        strict=args.strict,
    )
    app = create_retrieval_app(
        _retriever_loader(args),
        limits=limits,
        cache_size=args.cache_size,
        coalesce_max_batch=args.coalesce_max_batch,
        coalesce_wait_ms=args.coalesce_wait_ms,
        max_chunk_queries=args.max_chunk_queries or None,
        token=token,
        body_limits=_body_limits(args, args.max_queries),
        replica_id=replica_id(args),
    )
    _serve(app, args)


def _add_env_parser(sub: argparse._SubParsersAction) -> None:
    from agent_server.env.datasets import DEFAULT_WORLDS
    from agent_server.env.sessions import DEFAULT_MAX_GOLDEN_CHARS
    from agent_server.env.world_check import DEFAULT_INFO_TTL_S

    p = sub.add_parser(
        "env",
        help="serve SearchQAEnv sessions over HTTP",
        description="Serve Gym env sessions (create/reset/step/close, batched step). "
        "Set SEARCHGYM_API_TOKEN to require a bearer token, and SEARCHGYM_API_TOKENS (comma-separated) "
        "for more clients: a session is used only with the token that created it.",
    )
    p.add_argument(
        "--retriever-url",
        default="http://127.0.0.1:8000",
        help="the retrieval server for all sessions; several replicas comma-separated (a,b): each search goes "
        "to the least loaded healthy one, and fails over when one dies",
    )
    _add_server_args(p, 8001)
    p.add_argument("--max-sessions", type=int, default=1024, help="live sessions at once, of all tokens")
    p.add_argument(
        "--max-sessions-per-token",
        type=int,
        help="live sessions of one bearer token (default: --max-sessions divided among the accepted tokens), "
        "so one tenant cannot take the whole pool",
    )
    p.add_argument(
        "--recorded-creates",
        type=int,
        default=4096,
        help="create request ids remembered per token, so a retried create gets its first session",
    )
    p.add_argument("--idle-timeout", type=float, default=900.0, help="seconds before an idle session is closed")
    p.add_argument("--max-action-chars", type=int, default=8192)
    p.add_argument("--max-obs-chars", type=int, default=32768)
    p.add_argument(
        "--max-prompt-chars",
        type=_positive(int),
        help="characters in a reset's prompt, template with its question fields (default and at most "
        "--max-obs-chars): computed from the template before the prompt is built, so one over it is a 422",
    )
    p.add_argument(
        "--max-golden-chars",
        type=_positive(int),
        default=DEFAULT_MAX_GOLDEN_CHARS,
        help="characters of a reset's own golden_answers in all (256 answers at most); more is a 422",
    )
    p.add_argument("--max-batch", type=int, default=4096, help="steps in one batched-step request")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="NAME=SOURCE",
        help="a data set clients may name (repeatable): a folder (its splits are its <split>.jsonl/.json/.parquet "
        "files, listed at start), one such file (its one split), or a Hugging Face data set name",
    )
    p.add_argument(
        "--worlds",
        help=f"embedded world presets clients may name as world:<preset>, comma-separated (default "
        f"{','.join(DEFAULT_WORLDS)}; '' for none; 'large' takes minutes and GBs to generate on first use). "
        "Given, each one the retriever cannot answer is named in a warning at start-up",
    )
    p.add_argument(
        "--retriever-info-ttl",
        type=_positive(float),
        default=DEFAULT_INFO_TTL_S,
        help="seconds the retriever's /info (the corpora it serves) is kept for the world pairing check: a "
        "session on world:<preset> data the retriever cannot answer is refused (409)",
    )
    p.add_argument("--data-cache", type=int, default=8, help="loaded (data set, split) kept in memory")
    p.add_argument(
        "--threads",
        type=_positive(int),
        help=f"torch/OpenMP threads of this process (default {SERVER_THREADS}: see README, Threads)",
    )
    p.add_argument("--retriever-timeout", type=float, default=30.0)
    p.add_argument("--retriever-retries", type=int, default=2)


def run_env(args: argparse.Namespace) -> None:
    from agent_server.env.app import create_env_app
    from agent_server.env.datasets import DEFAULT_WORLDS

    args.threads = apply_threads(args.threads, default=SERVER_THREADS).threads
    datasets: dict[str, str] = {}
    for item in args.data:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            print(f"agent-server env: --data takes NAME=SOURCE, got {item!r}", file=sys.stderr)
            raise SystemExit(2)
        datasets[name] = path
    tokens = tokens_from_env()
    if args.host not in LOOPBACK and not tokens:
        log.warning("binding %s without SEARCHGYM_API_TOKEN: anyone who reaches it can use it", args.host)
    try:
        app = create_env_app(
            args.retriever_url,
            max_sessions=args.max_sessions,
            max_sessions_per_token=args.max_sessions_per_token,
            recorded_creates=args.recorded_creates,
            idle_timeout_s=args.idle_timeout,
            max_action_chars=args.max_action_chars,
            max_obs_chars=args.max_obs_chars,
            max_prompt_chars=args.max_prompt_chars,
            max_golden_chars=args.max_golden_chars,
            max_batch=args.max_batch,
            datasets=datasets,
            worlds=DEFAULT_WORLDS if args.worlds is None else [w.strip() for w in args.worlds.split(",") if w.strip()],
            data_cache=args.data_cache,
            retriever_timeout=args.retriever_timeout,
            retriever_retries=args.retriever_retries,
            token=tokens,
            body_limits=_body_limits(args, args.max_batch),
            retriever_info_ttl_s=args.retriever_info_ttl,
            warn_unserved_worlds=args.worlds is not None,
            replica_id=replica_id(args),
        )
    except ValueError as err:  # a user's mistake (unknown world, bad --data): one line, exit code 2
        print(f"agent-server env: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    _serve(app, args)


def build_parser() -> argparse.ArgumentParser:
    from agent_server.index_cli import add_index_parser
    from agent_server.retrieval.demo import add_demo_parser

    parser = argparse.ArgumentParser(prog="agent-server", description="searchgym's servers and index builder")
    sub = parser.add_subparsers(dest="command", required=True)
    add_index_parser(sub)
    _add_retriever_parser(sub)
    _add_env_parser(sub)
    add_demo_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    from agent_server.console_logging import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.command, getattr(args, "log_level", "info"), getattr(args, "log_file", None))
    if args.command == "index":
        from agent_server.index_cli import run_index

        run_index(args)
    elif args.command == "retriever":
        run_retriever(args)
    elif args.command == "env":
        run_env(args)
    elif args.command == "demo":
        from agent_server.retrieval.demo import run_demo_args

        run_demo_args(args)


if __name__ == "__main__":
    main()
