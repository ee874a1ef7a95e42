#!/usr/bin/env bash
# The compose stack end to end on a machine with a Docker engine (not part of CI, which has none):
# build the image, start the retriever and the env server, check their health, retrieve, play one
# episode through the env server, run the trainer profile for a few steps, tear down, print timings.
#
#   bash docker/smoke.sh                  # from the repository root
#   KEEP=1 bash docker/smoke.sh           # leave the stack and its volume up afterwards
#   STEPS=5 FULL_WARM_START=1 bash docker/smoke.sh   # more steps, the config's own warm start
#   PYTHON_IMAGE=my-registry/python:3.11-slim bash docker/smoke.sh   # another base image
#   TORCH_INDEX=https://my-mirror/simple bash docker/smoke.sh         # torch from another index
#
# It uses a project name of its own (searchgym-smoke) and its own ports, so it neither reuses nor
# removes a running searchgym stack's containers or volume. Needs docker with Compose v2 and curl.
set -euo pipefail

cd "$(dirname "$0")/.."
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-searchgym-smoke}"
export SEARCHGYM_RETRIEVER_PORT="${SEARCHGYM_RETRIEVER_PORT:-18000}"
export SEARCHGYM_ENV_PORT="${SEARCHGYM_ENV_PORT:-18001}"
export SEARCHGYM_RUNS_DIR="${SEARCHGYM_RUNS_DIR:-$PWD/runs/smoke}"
STEPS="${STEPS:-2}"
RETRIEVER="http://127.0.0.1:${SEARCHGYM_RETRIEVER_PORT}"
ENV_SERVER="http://127.0.0.1:${SEARCHGYM_ENV_PORT}"
BUILD_ARGS=()
if [[ -n "${PYTHON_IMAGE:-}" ]]; then
    BUILD_ARGS+=(--build-arg "PYTHON_IMAGE=${PYTHON_IMAGE}")
fi
if [[ -n "${TORCH_INDEX:-}" ]]; then
    BUILD_ARGS+=(--build-arg "TORCH_INDEX=${TORCH_INDEX}")
fi
AUTH=()
if [[ -n "${SEARCHGYM_API_TOKEN:-}" ]]; then
    AUTH+=(-H "Authorization: Bearer ${SEARCHGYM_API_TOKEN}")
fi

TIMINGS=()
started=$SECONDS
mark() {  # mark LABEL: record the seconds since the previous mark
    TIMINGS+=("$(printf '%-44s %5d s' "$1" $((SECONDS - started)))")
    started=$SECONDS
}
teardown() {
    local status=$?
    if [[ "${KEEP:-0}" == 1 ]]; then
        echo "KEEP=1: the stack is still up (docker compose -p ${COMPOSE_PROJECT_NAME} down -v)"
    else
        if [[ $status != 0 ]]; then
            mark "(the stage that failed)"
        fi
        echo "== tear down"
        docker compose --profile trainer down -v --remove-orphans >/dev/null 2>&1 || true
        mark "docker compose down -v"
    fi
    echo
    echo "smoke: $([[ $status == 0 ]] && echo passed || echo "FAILED (exit $status)")"
    if ((${#TIMINGS[@]})); then
        printf '  %s\n' "${TIMINGS[@]}"
    fi
    exit "$status"
}
trap teardown EXIT
fail() { echo "smoke: $*" >&2; docker compose logs --tail 50 >&2 || true; exit 1; }

# The trainer writes as uid 1000; a missing bind-mount folder would be created by Docker, owned by root,
# and a host user of another uid could not be written for either: a throw-away folder open to all.
mkdir -p "$SEARCHGYM_RUNS_DIR"
chmod a+rwx "$SEARCHGYM_RUNS_DIR"

echo "== build the image"
docker compose --profile trainer build "${BUILD_ARGS[@]}"
mark "build the image"

echo "== start the retriever and the env server"
docker compose up -d
# `up -d` returns once the env server has started, i.e. after the retriever is healthy (depends_on).
mark "docker compose up -d (retriever healthy)"

echo "== wait until both are healthy"
deadline=$((SECONDS + 900))
for service in retriever env; do
    until [[ "$(docker inspect -f '{{.State.Health.Status}}' "$(docker compose ps -q "$service")" 2>/dev/null)" == healthy ]]; do
        ((SECONDS < deadline)) || fail "$service not healthy after 900 s"
        sleep 2
    done
    mark "$service healthy"
done
curl -fsS "$RETRIEVER/health" >/dev/null || fail "retriever /health"
curl -fsS "$ENV_SERVER/health" >/dev/null || fail "env server /health"

echo "== retrieve (an entity of the default world)"
hits=$(curl -fsS "${AUTH[@]}" "$RETRIEVER/retrieve" -H 'content-type: application/json' \
    -d '{"queries": ["Who founded Gybrati Sound?"], "topk": 3, "return_scores": true}')
python3 -c '
import json, sys
rows = json.loads(sys.argv[1])["result"][0]
assert len(rows) == 3 and any("Gybrati Sound" in r["document"]["contents"] for r in rows), rows
print(rows[0]["document"]["contents"][:100])' "$hits" \
    || fail "unexpected /retrieve answer: $hits"
mark "retrieve"

# reset(seed=0) on the default world's test split draws "When was Fugai Naiquumeir born?" (gold: 1930).
echo "== play one episode through the env server"
session=$(curl -fsS "${AUTH[@]}" "$ENV_SERVER/sessions" -H 'content-type: application/json' \
    -d '{"env_id": "searchgym/SearchQA-v0", "options": {"data": "world:default", "split": "test"}}')
sid=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["session_id"])' "$session") || fail "create: $session"
curl -fsS "${AUTH[@]}" "$ENV_SERVER/sessions/$sid/reset" -H 'content-type: application/json' -d '{"seed": 0}' >/dev/null \
    || fail "reset"
step() {
    curl -fsS "${AUTH[@]}" "$ENV_SERVER/sessions/$sid/step" -H 'content-type: application/json' \
        -d "$(python3 -c 'import json, sys; print(json.dumps({"action": sys.argv[1]}))' "$1")"
}
step "<search> Fugai Naiquumeir born </search>" \
    | python3 -c 'import json, sys; r = json.load(sys.stdin); assert "Fugai Naiquumeir" in r["observation"], r' \
    || fail "search step"
step "<answer> 1930 </answer>" \
    | python3 -c 'import json, sys; r = json.load(sys.stdin); assert r["terminated"] and r["reward"] == 1.0, r' \
    || fail "answer step"
curl -fsS "${AUTH[@]}" -X DELETE "$ENV_SERVER/sessions/$sid" >/dev/null
mark "one env episode"

# A 20-step warm start (as tests/test_compose.py), unless FULL_WARM_START=1: the config's own takes
# many minutes on a CPU and is not what a smoke test is for.
QUICK=(--set model.embedded_sft_examples=60 --set model.embedded_sft_steps=20
       --set model.embedded_sft_first_action_steps=20 --set model.embedded_sft_copy_drill=0)
if [[ "${FULL_WARM_START:-0}" == 1 ]]; then
    QUICK=()
fi
echo "== the trainer profile, $STEPS steps"
docker compose --profile trainer run --rm trainer \
    search-trainer train --config /config/compose.yaml --steps "$STEPS" --out-dir /runs/smoke \
    --set run.eval_questions=20 "${QUICK[@]}"
[[ -s "$SEARCHGYM_RUNS_DIR/smoke/metrics.jsonl" ]] || fail "no metrics.jsonl from the trainer"
mark "trainer: warm start, $STEPS steps, evaluations"
