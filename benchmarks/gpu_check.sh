#!/usr/bin/env bash
# The trainer on one GPU: bf16, gradient checkpointing, the update timing of benchmarks/trainer.py, then
# `search-trainer train` for 4 steps with a checkpoint at step 2 and a resume to step 6.
#
#   bash benchmarks/gpu_check.sh MODEL_DIR OUT_DIR
#
# MODEL_DIR holds a config.json and a tokenizer (weights optional: without them the model is built
# from the config with random weights, which is what a machine with no model hub access can run).
# The retriever is benchmarks/stand_in_retriever.py (no Java there), so the rewards mean nothing:
# this checks mechanics, memory and speed, not learning. A random-weight model never emits a stop tag,
# so each turn runs to the token limit: its evaluations are slow (~100 s per 16 questions on an H100).
set -euo pipefail
MODEL_DIR=${1:?model dir}
OUT=${2:?out dir}
PORT=${PORT:-8000}
DEVICE=${DEVICE:-cuda}
DTYPE=${DTYPE:-bfloat16}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt" || true

python3 - "$MODEL_DIR" /tmp/gpu-check-model <<'EOF'
import sys
from pathlib import Path
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
src, dst = sys.argv[1], sys.argv[2]
has_weights = any(Path(src).glob("*.safetensors"))
if has_weights:
    model = AutoModelForCausalLM.from_pretrained(src)
else:
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
model.save_pretrained(dst)
AutoTokenizer.from_pretrained(src).save_pretrained(dst)
params = sum(p.numel() for p in model.parameters())
print(f"model: {params / 1e6:.0f}M parameters, {'trained' if has_weights else 'random'} weights", flush=True)
EOF

python3 benchmarks/stand_in_retriever.py --world small --port "$PORT" > "$OUT/retriever.log" 2>&1 &
RETRIEVER=$!
trap 'kill $RETRIEVER 2>/dev/null || true' EXIT
python3 -c "from search_env.retriever_client import RetrieverClient as C; C('http://127.0.0.1:$PORT').wait_ready(120)"

GPU=(--set model.device=$DEVICE --set model.dtype=$DTYPE --set model.gradient_checkpointing=true
     --set rollout.max_new_tokens=128 --set rollout.max_total_tokens=2048 --set env.topk=3
     --set optim.micro_batch_size=16)
python3 benchmarks/trainer.py --model /tmp/gpu-check-model --retriever-url "http://127.0.0.1:$PORT" \
    --repeats 3 --rollouts 2 --log-dir /tmp/gpu-bench "${GPU[@]}" 2>&1 | tee "$OUT/bench.txt"

TRAIN=(--config configs/smollm2.yaml --model /tmp/gpu-check-model --retriever-url "http://127.0.0.1:$PORT"
       --data world:small --out-dir /tmp/gpu-run --set run.checkpoint_every=2 --set run.eval_questions=16 "${GPU[@]}")
python3 -m trainer.cli train "${TRAIN[@]}" --steps 4 2>&1 | tee "$OUT/train.txt"
python3 -m trainer.cli train "${TRAIN[@]}" --steps 6 --resume /tmp/gpu-run 2>&1 | tee "$OUT/resume.txt"
cp /tmp/gpu-run/metrics.jsonl "$OUT/metrics.jsonl"
