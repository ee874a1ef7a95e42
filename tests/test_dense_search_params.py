"""faiss search parameters end to end (issue 13 part 2): `agent-server retriever --nprobe` reaches the
IVF index (full top-k where faiss's default nprobe 1 returns a fraction) and /info reports it; a
parameter the index type lacks is a clear error. A real IVF index of ~300 short passages, a real
server on loopback; plus the encoder precision setting (auto: fp32 on a CPU without native bf16)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from agent_server.backends.dense import DenseRetriever, build_dense_index
from agent_server.encoder import Encoder, load_encoder, resolve_dtype
from search_env.server_process import ServerProcess
from tests.backend_fixtures import make_entries, write_corpus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]
IVF = "IVF16,Flat"  # ~19 of 300 passages per list: nprobe 1 cannot fill a top-100


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return load_encoder()


@pytest.fixture(scope="module")
def ivf_index(tmp_path_factory: pytest.TempPathFactory, encoder: Encoder) -> Path:
    corpus = write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", make_entries())
    return build_dense_index(corpus, tmp_path_factory.mktemp("ivf") / "index", encoder, IVF, progress=False)


@pytest.fixture(scope="module")
def ivf_server(ivf_index: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    log = tmp_path_factory.mktemp("logs") / "ivf.log"
    args = ["retriever", "--backend", "dense", "--dense-index", str(ivf_index), "--nprobe", "16", "--cache-size", "0"]
    server = ServerProcess(args, log).start()
    try:
        yield server.wait_ready(timeout=300)
    finally:
        server.stop()


QUERIES = ["a city by the river", "who founded the company", "mountain climbing", "ancient poetry"]


def test_nprobe_from_the_command_line_fills_the_topk(ivf_server, ivf_index, encoder) -> None:
    body = {"queries": QUERIES, "topk": 100, "return_scores": True}
    rows = httpx.post(ivf_server.url + "/retrieve", json=body, timeout=120).json()["result"]
    assert [len(row) for row in rows] == [100] * len(QUERIES)
    backend = httpx.get(ivf_server.url + "/info").json()["backend"]
    # auto: bf16-mixed on a CPU with native bf16 matmul, fp32 on others (test_encode_precision.py)
    auto = resolve_dtype("auto", "cpu")
    assert (backend["index_type"], backend["nprobe"], backend["encode_dtype"]) == (IVF, 16, auto)
    # The same index at faiss's default nprobe (1) searches one list: far fewer than 100 come back.
    default = DenseRetriever(ivf_index, encoder)
    assert max(len(hits) for hits in default.search(QUERIES, 100)) < 100
    default.close()


def test_a_search_parameter_the_index_lacks_is_a_clear_error(ivf_index, encoder) -> None:
    with pytest.raises(ValueError, match="--ef-search does not apply to the 'IVF16,Flat' index"):
        DenseRetriever(ivf_index, encoder, ef_search=64)


def test_encoder_precision_auto_is_fp16_on_cuda_and_bf16_stays_close(encoder) -> None:
    assert resolve_dtype("auto", "cuda:0") == "fp16" and resolve_dtype("auto", "cpu", native_bf16=False) == "fp32"
    with pytest.raises(ValueError, match="encode dtype must be one of"):
        resolve_dtype("fp8", "cpu")
    half = load_encoder(dtype="bf16", device="cpu")
    assert half.dtype == "bf16"
    full, low = encoder.encode_queries(QUERIES), half.encode_queries(QUERIES)
    assert low.dtype == np.float32
    cosine = np.sum(full * low, axis=1) / np.linalg.norm(low, axis=1)  # `full` rows have unit norm
    assert cosine.min() > 0.99  # bf16 keeps ~3 significant digits
