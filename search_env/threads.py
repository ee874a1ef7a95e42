"""CPU threads of a long-running searchgym process: torch's intra-/inter-op pools and OpenMP (faiss,
MKL, OpenBLAS), set deliberately at start-up from a `--threads` flag and logged.

Why: left alone, torch and OpenMP start one spinning thread per core in every process. On a small
machine shared by a retriever, an env server and a trainer, they fight for the same cores: issue 14
measured a 135M model generating 32 tokens in 60-72 s with torch's default threads on 2 busy cores
against 2.5 s with one; `benchmarks/threads.py` measured one dense-retriever query encoding in
290-358 ms with 2 threads and 37-41 ms with 1 on the same busy machine (README, "Threads"). So
servers default to 1 thread a process, and the trainer to half the CPUs it may use (it shares the
machine with its retriever and env server).

torch and faiss are never imported here: the OpenMP variables are set (read by a library when it
loads), and a library already loaded is told directly (torch.set_num_threads, faiss.omp_set_num_threads).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import asdict, dataclass
from typing import Any

# Read by OpenMP runtimes (torch's, faiss's), MKL and OpenBLAS when they initialise.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
SERVER_DEFAULT = 1

log = logging.getLogger("searchgym.threads")


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, so a container's or taskset's limit counts)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def trainer_default() -> int:
    """Half the CPUs this process may use, at least 1: the other half is left to the retriever and env
    server a training run talks to (on SMT machines, half the logical CPUs is also torch's own choice,
    the physical cores)."""
    return max(1, available_cpus() // 2)


@dataclass(frozen=True)
class ThreadSettings:
    """What a process chose: `threads` for torch intra-op and OpenMP, `interop` torch's inter-op pool
    (None when torch was not loaded, or its pool had already started), and where the number came from."""

    threads: int
    interop: int | None
    source: str
    torch_loaded: bool
    faiss_loaded: bool

    def describe(self) -> str:
        torch = (
            f"torch intra={self.threads} inter={self.interop if self.interop is not None else 'unchanged'}"
            if self.torch_loaded
            else f"torch intra={self.threads} (when loaded)"
        )
        return f"threads: {torch}, faiss/OpenMP={self.threads} ({self.source}; {available_cpus()} CPUs available)"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_threads(
    threads: int | None, *, default: int, flag: str = "--threads", load_torch: bool = False
) -> ThreadSettings:
    """Set this process's CPU threads to `threads` (None: `default`) and log what was chosen.

    Sets THREAD_ENV_VARS (so torch, faiss, MKL and OpenBLAS loaded later start with that many, and
    so do child processes), calls torch.set_num_threads / set_num_interop_threads if torch is loaded
    (`load_torch` imports it first, when installed), and faiss.omp_set_num_threads if faiss is loaded.
    Call it at start-up, before the work starts. Raises ValueError for a count below 1.
    """
    n = default if threads is None else threads
    if n < 1:
        raise ValueError(f"{flag} must be at least 1, got {n}")
    source = f"from {flag}" if threads is not None else f"default {default}; set {flag} to change"
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    if load_torch and "torch" not in sys.modules:
        with contextlib.suppress(ImportError):
            import torch  # noqa: F401
    interop = None
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(n)
            interop = n
        except RuntimeError:  # its pool already ran work: it cannot be resized any more
            interop = None
    faiss = sys.modules.get("faiss")
    if faiss is not None:
        faiss.omp_set_num_threads(n)
    settings = ThreadSettings(n, interop, source, torch is not None, faiss is not None)
    log.info("%s", settings.describe())
    return settings


def current_threads() -> dict[str, Any]:
    """The thread counts this process runs with now, for a server's /info: torch's intra-/inter-op
    counts and faiss's OpenMP maximum (None for a library not loaded), and OMP_NUM_THREADS."""
    torch = sys.modules.get("torch")
    faiss = sys.modules.get("faiss")
    return {
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_intra_op": torch.get_num_threads() if torch is not None else None,
        "torch_inter_op": torch.get_num_interop_threads() if torch is not None else None,
        "faiss_omp": faiss.omp_get_max_threads() if faiss is not None else None,
        "cpus_available": available_cpus(),
    }
