"""Query encoding in bf16-mixed (issue 13 part 2): the same results as fp32 through the dense backend.

bf16-mixed encodes under torch's bf16 autocast (matmuls in bf16, layer norm and softmax in fp32), its
Linear weights stored in bf16 as autocast would round them. It is fast where the CPU multiplies bf16
natively (AMX, AVX512-BF16) and emulated elsewhere, so this test runs on any CPU: the packaged MiniLM,
the small world's real faiss index (built in fp32, as every index is by default), 300 of its train
questions.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from agent_server.backends.dense import META_FILE, DenseRetriever
from agent_server.embedded_indexes import ensure_index
from agent_server.encoder import MIXED_BF16, cpu_has_native_bf16, load_encoder, resolve_dtype
from agent_server.index_cli import main as index_main
from search_env.qa_data import load_qa
from tests.backend_fixtures import make_entries, write_corpus

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


def test_auto_picks_bf16_mixed_only_on_a_cpu_with_native_bf16() -> None:
    assert resolve_dtype("auto", "cpu", native_bf16=True) == MIXED_BF16
    assert resolve_dtype("auto", "cpu", native_bf16=False) == "fp32"
    assert resolve_dtype("auto", "cuda:0", native_bf16=True) == "fp16"
    assert resolve_dtype("auto", "cpu") == (MIXED_BF16 if cpu_has_native_bf16() else "fp32")
    assert resolve_dtype(MIXED_BF16, "cpu", native_bf16=False) == MIXED_BF16  # asked for: always honoured


def test_bf16_mixed_gives_the_same_top_k_as_fp32_on_the_small_world(small_world) -> None:
    index = ensure_index("dense", small_world.corpus)
    assert json.loads((index / META_FILE).read_text())["encode_dtype"] == "fp32"  # builds stay fp32
    questions = list(dict.fromkeys(r.question for r in load_qa(small_world.qa["train"])))[:300]
    full, mixed = load_encoder(None, "cpu", "fp32"), load_encoder(None, "cpu", MIXED_BF16)
    assert mixed.dtype == MIXED_BF16
    kinds = {type(m).__name__: m.weight.dtype for m in mixed.model.modules() if hasattr(m, "weight")}
    assert kinds["Linear"] == torch.bfloat16 and kinds["LayerNorm"] == torch.float32

    a, b = full.encode_queries(questions), mixed.encode_queries(questions)
    assert b.dtype == np.float32
    assert not torch.is_autocast_enabled("cpu")  # the autocast context ended with the call
    with torch.autocast("cpu", dtype=torch.bfloat16):  # its Linear weights stored in bf16 change nothing
        assert np.array_equal(full.encode_queries(questions[:64]), mixed.encode_queries(questions[:64]))
    cosine = np.sum(a * b, axis=1)  # both unit norm
    assert cosine.min() > 0.999  # measured min 0.99997; a whole-model bf16 cast gives ~0.996

    ids = {}
    for name, encoder in (("fp32", full), ("mixed", mixed)):
        retriever = DenseRetriever(index, encoder)
        ids[name] = [[hit.id for hit in hits] for hits in retriever.search(questions, 10)]
        retriever.close()
    pairs = list(zip(ids["fp32"], ids["mixed"], strict=True))
    same_top3 = sum(x[:3] == y[:3] for x, y in pairs) / len(pairs)
    overlap10 = np.mean([len(set(x) & set(y)) / 10 for x, y in pairs])
    # Measured on all 1,000 small-world train questions: 99.3% / 99.7% (5,000 default-world: see
    # benchmarks/encode_precision.py). A near tie between passages may swap; more than that is a bug.
    assert same_top3 >= 0.95 and overlap10 >= 0.98, (same_top3, overlap10)


def test_index_build_precision_is_chosen_on_the_command_line_and_recorded(tmp_path) -> None:
    corpus = write_corpus(tmp_path / "corpus.jsonl", make_entries(24))
    out = tmp_path / "index"
    assert index_main(["index", "--backend", "dense", "--corpus", str(corpus), "--out", str(out),
                       "--device", "cpu", "--encode-dtype", MIXED_BF16]) == 0  # fmt: skip
    assert json.loads((out / META_FILE).read_text())["encode_dtype"] == MIXED_BF16
    retriever = DenseRetriever(out, dtype="fp32", device="cpu")  # queries may use another precision
    assert len(retriever.search(["anything"], 5)[0]) == 5
    retriever.close()
