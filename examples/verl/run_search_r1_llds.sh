#!/usr/bin/env bash
# GRPO + LLDS in verl (>= 0.9), Search-R1 style: multi-turn rollouts whose `search` tool calls
# searchgym's retriever. Not run end to end by the project (no GPU cluster); see README.md here.
#
#   DATA_DIR=~/data/searchR1_processed_direct N_GPUS=8 bash examples/verl/run_search_r1_llds.sh [hydra overrides...]
#
# Needs, in one environment: verl with its rollout engine (vLLM or SGLang) per verl's install docs,
# and searchgym (`pip install -e ".[server,bm25]"` from a clone) so that `agent-server` exists and
# verl's processes can import trainer.integrations.verl.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
DATA_DIR="${DATA_DIR:-$HOME/data/searchR1_processed_direct}"   # verl's Search-R1 preprocessing output
MODEL="${MODEL:-Qwen/Qwen2.5-3B-Instruct}"
N_GPUS="${N_GPUS:-8}"
RETRIEVER_PORT="${RETRIEVER_PORT:-8000}"
# What the retriever serves. Search-R1's own corpus and prebuilt BM25 index, for example:
#   RETRIEVER_ARGS="--backend bm25 --bm25-index wiki-18-bm25 --corpus wiki-18.jsonl"
# The default serves the embedded world (a smoke run: its questions are not Search-R1's).
RETRIEVER_ARGS="${RETRIEVER_ARGS:---backend bm25 --world default}"
WORK="$(mktemp -d)"

# 1. searchgym's retriever on loopback, stopped when this script exits.
# shellcheck disable=SC2086  # RETRIEVER_ARGS is a list of arguments
agent-server retriever $RETRIEVER_ARGS --host 127.0.0.1 --port "$RETRIEVER_PORT" >"$WORK/retriever.log" 2>&1 &
RETRIEVER_PID=$!
trap 'kill "$RETRIEVER_PID" 2>/dev/null || true' EXIT
python3 -c "from search_env.retriever_client import RetrieverClient as C; C('http://127.0.0.1:$RETRIEVER_PORT').wait_ready(1800)" \
    || { tail -n 40 "$WORK/retriever.log"; exit 1; }

# 2. The tool config, pointed at that port.
sed "s#http://127.0.0.1:8000#http://127.0.0.1:$RETRIEVER_PORT#" "$HERE/config/search_tool_config.yaml" >"$WORK/search_tool_config.yaml"

# 3. verl's trainer with the recipe's config (verl's ppo_trainer + GRPO, multi-turn tools, loss_mode=llds).
python3 -m verl.trainer.main_ppo \
    --config-path="$HERE/config" \
    --config-name=search_r1_llds \
    data.train_files="$DATA_DIR/train.parquet" \
    data.val_files="$DATA_DIR/test.parquet" \
    actor_rollout_ref.model.path="$MODEL" \
    actor_rollout_ref.rollout.multi_turn.tool_config_path="$WORK/search_tool_config.yaml" \
    trainer.n_gpus_per_node="$N_GPUS" \
    "$@"
