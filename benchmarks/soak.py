"""Soak: hostile and normal clients at once against a real retriever and env server, on loopback only.

Starts a BM25 retriever over an embedded world and an env server in front of it (each a uvicorn process
on a free 127.0.0.1 port), then for `--seconds` runs, side by side in threads:
- normal clients: single-query `/retrieve` calls with questions of the world, and env episodes (create
  a session, reset, search the question, answer, delete);
- hostile clients, each looping over its kind: deeply nested JSON, a 5,000-digit topk, NaN, a
  1,000,000-item query list, a chunked body past the size limit, a request head that stalls, a lone
  surrogate, a 1,300-term query, an 8,192-char env action, a data split that is a path.
Every loop is bounded by the deadline. Prints a table: per client kind, requests, answers by status
class, and for normal clients failures (anything but a 2xx; for hostile ones anything but a 4xx/408
or a refused connection) and p50/p99 latency. Goals: 0 innocent failures, 0 5xx.

    python benchmarks/soak.py [--seconds 60] [--world small] [--normal 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search_env.qa_data import load_qa  # noqa: E402
from search_env.server_process import ServerProcess  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402

console = Console(width=140)


class Tally:
    """Per client kind: status classes, failures and latencies (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.failures: Counter[str] = Counter()
        self.latencies: defaultdict[str, list[float]] = defaultdict(list)

    def add(self, kind: str, status: str, failed: bool, seconds: float) -> None:
        with self.lock:
            self.statuses[kind][status] += 1
            self.failures[kind] += failed
            self.latencies[kind].append(seconds)


def _status_class(code: int) -> str:
    return f"{code // 100}xx"


def _timed(tally: Tally, kind: str, call: Callable[[], int | str], ok: Callable[[int | str], bool]) -> None:
    began = time.perf_counter()
    try:
        outcome = call()
    except (httpx.HTTPError, OSError) as err:
        outcome = type(err).__name__
    status = _status_class(outcome) if isinstance(outcome, int) else str(outcome)
    tally.add(kind, status, not ok(outcome), time.perf_counter() - began)


def normal_retrieve(url: str, questions: list[str], tally: Tally, deadline: float, offset: int) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        i = offset
        while time.monotonic() < deadline:
            query = questions[i % len(questions)]
            _timed(
                tally,
                "normal /retrieve",
                lambda q=query: client.post("/retrieve", json={"query": q}).status_code,
                lambda s: s == 200,
            )
            i += 5


def normal_episode(env_url: str, tally: Tally, deadline: float, offset: int) -> None:
    with httpx.Client(base_url=env_url, timeout=30) as client:
        i = offset
        while time.monotonic() < deadline:

            def episode(index: int = i) -> int:
                r = client.post("/sessions", json={"options": {"data": "world:small", "split": "test"}})
                if r.status_code != 201:
                    return r.status_code
                sid, questions = r.json()["session_id"], r.json()["num_questions"]
                try:
                    r = client.post(f"/sessions/{sid}/reset", json={"options": {"index": index % questions}})
                    if r.status_code != 200:
                        return r.status_code
                    question = r.json()["info"].get("question", "")
                    for action in (f"<search>{question}</search>", "<answer>unknown</answer>"):
                        r = client.post(f"/sessions/{sid}/step", json={"action": action})
                        if r.status_code != 200:
                            return r.status_code
                    return 200
                finally:
                    client.delete(f"/sessions/{sid}")

            _timed(tally, "normal env episode", episode, lambda s: s == 200)
            i += 3


def _raw(port: int, payload: bytes, read_timeout: float = 30.0) -> int:
    """Send raw bytes, return the answer's status code (0 when the server closed without one)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused before it was all sent
            sock.sendall(payload)
        head = sock.recv(64)
    return int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else 0


def _post(port: int, path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n"
        % (path.encode(), len(body), extra)
    ) + body


def hostile_kinds(retriever: ServerProcess, env: ServerProcess) -> dict[str, Callable[[], int | str]]:
    rp = retriever.port
    nested = b"[" * 5000 + b"]" * 5000
    chunk = b"0" * 65536
    oversized = (
        b"POST /retrieve HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + (b"%x\r\n%s\r\n" % (len(chunk), chunk)) * 700
    )  # ~45 MiB
    terms = " ".join(f"{a}{b}" for a in "abcdefghijklmnopqrstuvwxyz" for b in "abcdefghijklmnopqrstuvwxyz")[:3900]

    def stalled_head() -> int:
        with socket.create_connection(("127.0.0.1", rp), timeout=30) as sock:
            sock.sendall(b"POST /retrieve HTTP/1.1\r\nHost: x\r\n")
            head = sock.recv(64)  # the server's head deadline answers (408) or closes
        return int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else 0

    def http(url: str, path: str, payload: object) -> int:
        return httpx.post(
            url + path, content=json.dumps(payload), timeout=30, headers={"content-type": "application/json"}
        ).status_code

    return {
        "nested JSON": lambda: _raw(rp, _post(rp, "/retrieve", nested)),
        "5,000-digit topk": lambda: _raw(
            rp, _post(rp, "/retrieve", b'{"queries": ["a"], "topk": ' + b"9" * 5000 + b"}")
        ),
        "NaN topk": lambda: _raw(rp, _post(rp, "/retrieve", b'{"queries": ["a"], "topk": NaN}')),
        "1M-item query list": lambda: _raw(rp, _post(rp, "/retrieve", b'{"queries": [' + b"0," * 999_999 + b"0]}")),
        "chunked body > limit": lambda: _raw(rp, oversized),
        "stalled head": stalled_head,
        "lone surrogate": lambda: http(retriever.url, "/retrieve", {"queries": ["Name \ud83d"]}),
        "1,300-term query": lambda: http(retriever.url, "/retrieve", {"queries": [terms]}),
        "8,192-char env action": lambda: _env_long_action(env.url),
        "path as data split": lambda: http(
            env.url, "/sessions", {"options": {"data": "world:small", "split": "../secret/train"}}
        ),
    }


def _env_long_action(env_url: str) -> int:
    with httpx.Client(base_url=env_url, timeout=30) as client:
        r = client.post("/sessions", json={"options": {"data": "world:small"}})
        if r.status_code != 201:
            return r.status_code
        sid = r.json()["session_id"]
        try:
            client.post(f"/sessions/{sid}/reset", json={})
            return client.post(f"/sessions/{sid}/step", json={"action": "<search>" + "x " * 4096}).status_code
        finally:
            client.delete(f"/sessions/{sid}")


def hostile_loop(kind: str, call: Callable[[], int | str], tally: Tally, deadline: float) -> None:
    # A refusal is a 4xx (408 included) or a connection the server closed; a 2xx is fine where the input is
    # awkward but answerable (a surrogate is replaced, a long query cut, an over-long action an observation).
    while time.monotonic() < deadline:
        _timed(
            tally,
            f"hostile: {kind}",
            call,
            lambda s: (
                s == 0
                or (isinstance(s, int) and s < 500)
                or s in ("ConnectionResetError", "BrokenPipeError", "RemoteProtocolError")
            ),
        )
        time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0, help="soak duration (bounded: at most 600)")
    p.add_argument("--world", default="small")
    p.add_argument("--normal", type=int, default=4, help="normal /retrieve client threads (plus 2 env clients)")
    args = p.parse_args()
    seconds = min(args.seconds, 600.0)
    world = ensure_world(args.world)
    questions = [r.question for r in load_qa(world.qa["test"])][:500]
    logs = ROOT / "runs" / "soak"
    logs.mkdir(parents=True, exist_ok=True)
    retriever = ServerProcess(
        ["retriever", "--backend", "bm25", "--world", args.world, "--header-timeout", "2", "--body-timeout", "5"],
        logs / "retriever.log",
    ).start()
    env = None
    try:
        retriever.wait_ready(timeout=900)
        env = (
            ServerProcess(
                ["env", "--retriever-url", retriever.url, "--header-timeout", "2", "--body-timeout", "5"],
                logs / "env.log",
            )
            .start()
            .wait_ready(timeout=120)
        )
        tally = Tally()
        deadline = time.monotonic() + seconds
        threads = [
            threading.Thread(target=normal_retrieve, args=(retriever.url, questions, tally, deadline, i))
            for i in range(args.normal)
        ]
        threads += [threading.Thread(target=normal_episode, args=(env.url, tally, deadline, i)) for i in range(2)]
        threads += [
            threading.Thread(target=hostile_loop, args=(kind, call, tally, deadline))
            for kind, call in hostile_kinds(retriever, env).items()
        ]
        console.print(f"soak: {len(threads)} client threads for {seconds:g} s against {retriever.url} and {env.url}")
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=seconds + 120)
    finally:
        if env is not None:
            env.stop()
        retriever.stop()
    table = Table(title=f"soak, {seconds:g} s, world {args.world}, loopback")
    for column in ("client kind", "requests", "answers", "failures", "p50 ms", "p99 ms"):
        table.add_column(column, justify="left" if column in ("client kind", "answers") else "right")
    five_xx = 0
    for kind in sorted(tally.statuses, key=lambda k: (k.startswith("hostile"), k)):
        lat = sorted(tally.latencies[kind])
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else float("nan")
        five_xx += tally.statuses[kind]["5xx"]
        answers = ", ".join(f"{s} {n}" for s, n in sorted(tally.statuses[kind].items()))
        table.add_row(
            kind,
            str(len(lat)),
            answers,
            str(tally.failures[kind]),
            f"{statistics.median(lat) * 1000:.0f}" if lat else "-",
            f"{p99 * 1000:.0f}",
        )
    console.print(table)
    innocent = sum(n for k, n in tally.failures.items() if k.startswith("normal"))
    console.print(f"innocent failures: {innocent} (goal 0); 5xx answers: {five_xx} (goal 0)")


if __name__ == "__main__":
    main()
