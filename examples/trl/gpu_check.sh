#!/usr/bin/env bash
# GRPO + LLDS in TRL on one GPU, offline: ~5 optimizer steps of GRPOLLDSTrainer (trainer/integrations/trl.py)
# with TRL's multi-turn tool loop calling searchgym's retriever on loopback.
#
#   WHEELS=build/trl-wheels bash examples/trl/gpu_check.sh [OUT_DIR]
#
# For a box with python 3.12, torch, transformers >= 5.13, accelerate, pandas and pyarrow but no trl: the
# wheels in $WHEELS (listed in examples/trl/README.md) are installed with --no-deps, nothing is downloaded.
# The retriever is benchmarks/stand_in_retriever.py (no Java for BM25 there; same wire schema) and the
# policy is the tiny one built from the embedded world and warm-started to call the search tool: this
# checks mechanics and speed on cuda (the loss, the LLDS term and gate, tool calls), not learning.
set -euo pipefail
OUT=${1:-/tmp/trl-gpu-check}
WHEELS=${WHEELS:-build/trl-wheels}
PORT=${PORT:-8000}
STEPS=${STEPS:-5}
mkdir -p "$OUT"
export SEARCHGYM_HOME=${SEARCHGYM_HOME:-/tmp/searchgym-home} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" || true
if ! python3 -c "import trl" 2>/dev/null; then
    python3 -m pip install --no-index --no-deps "$WHEELS"/*.whl > "$OUT/pip.txt" 2>&1
fi
python3 -c "import torch, transformers, trl; print('torch', torch.__version__, 'transformers', transformers.__version__, 'trl', trl.__version__, 'cuda', torch.cuda.is_available())" | tee "$OUT/versions.txt"

python3 benchmarks/stand_in_retriever.py --world small --port "$PORT" > "$OUT/retriever.log" 2>&1 &
RETRIEVER=$!
trap 'kill $RETRIEVER 2>/dev/null || true' EXIT
python3 -c "from search_env.retriever_client import RetrieverClient as C; C('http://127.0.0.1:$PORT').wait_ready(120)"

# 2 questions x 8 rollouts per generation batch; num_iterations=2: each batch is trained on twice, so the
# second pass sees how far the first one moved the log-probs (what LLDS acts on).
python3 examples/trl/train_grpo_llds.py --model tiny --retriever-url "http://127.0.0.1:$PORT" --qa world:small \
    --limit 64 --out "$OUT/run" --steps "$STEPS" --batch 16 --num-generations 8 --num-iterations 2 --lr 5e-4 \
    --topk 2 --max-completion-length 256 --max-tool-calls 2 --llds-lambda 0.2 --warm-steps 36 --search-bonus 1 \
    2>&1 | tee "$OUT/train.txt"
