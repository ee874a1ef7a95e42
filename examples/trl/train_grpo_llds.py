"""GRPO + LLDS with TRL, multi-turn search through TRL's tool loop against searchgym's retriever.

    agent-server retriever --backend bm25 --world small --port 8000 &        # or your wiki-18 server
    accelerate launch examples/trl/train_grpo_llds.py --model Qwen/Qwen2.5-3B-Instruct \
        --retriever-url http://127.0.0.1:8000 --qa world:small --out runs/trl-llds --use-vllm

``--model tiny`` trains searchgym's tiny policy (built from the embedded world, warm-started to call
the search tool) instead: no download, which is what examples/trl/gpu_check.sh runs on a bare GPU box.
One JSON line per optimizer step: loss, the LLDS loss and term, the gate's activation rate, tool
calls, reward and step time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run from a checkout without installing

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from search_env.qa_data import load_qa  # noqa: E402
from search_env.world.store import ensure_world  # noqa: E402
from trainer.integrations.trl import (  # noqa: E402
    GRPOLLDSConfig,
    GRPOLLDSTrainer,
    SearchEnvironment,
    exact_match_reward,
    qa_prompt_rows,
)

SHOWN = ("loss", "llds/loss", "llds/term", "llds/activation_rate", "tools/call_frequency", "reward", "step_time")


class PrintSteps(TrainerCallback):
    """One JSON line per logged step with the figures a run is watched by."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            shown = {k: round(float(logs[k]), 6) for k in SHOWN if k in logs}
            print(json.dumps({"step": state.global_step, **shown}), flush=True)


def _qa_records(source: str, limit: int | None):
    if source.startswith("world:"):
        return load_qa(ensure_world(source.removeprefix("world:")).qa["train"], limit=limit)
    return load_qa(source, limit=limit)


def _search_bonus(bonus: float):
    def searched(environments, **_):
        return [bonus if environment.searches else 0.0 for environment in environments]

    return searched


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="Qwen/Qwen2.5-3B-Instruct", help="a Hugging Face model, or 'tiny'")
    p.add_argument("--retriever-url", default="http://127.0.0.1:8000")
    p.add_argument("--qa", default="world:small", help="a QA file/folder/HF data set, or world:NAME")
    p.add_argument("--limit", type=int, default=None, help="at most this many questions")
    p.add_argument("--out", default="runs/trl-llds")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=8, help="per-device train batch (completions)")
    p.add_argument("--num-generations", type=int, default=8, help="rollout n (group size)")
    p.add_argument("--num-iterations", type=int, default=2, help="optimizer passes per generation batch (mu)")
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-6)
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--max-completion-length", type=int, default=1024)
    p.add_argument("--max-tool-calls", type=int, default=4)
    p.add_argument("--llds-lambda", type=float, default=0.2)
    p.add_argument("--llds-gate", default="action", choices=["action", "response", "token"])
    p.add_argument("--use-vllm", action="store_true", help="generate with vLLM (colocate mode)")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--warm-steps", type=int, default=40, help="--model tiny: SFT steps towards a search call")
    p.add_argument(
        "--search-bonus",
        type=float,
        default=0.0,
        help="reward added to a rollout that searched (a shaping term for mechanics checks; 0 = EM only)",
    )
    a = p.parse_args()

    rows = qa_prompt_rows(_qa_records(a.qa, a.limit))
    factory = SearchEnvironment.factory(a.retriever_url, topk=a.topk)
    model, tokenizer = a.model, None
    if a.model == "tiny":
        from trainer.tiny_policy.model import build_tiny_model
        from trainer.tiny_policy.tool_calling import tool_calling_tokenizer, warm_start_tool_call

        world = ensure_world(a.qa.removeprefix("world:") if a.qa.startswith("world:") else "small")
        tokenizer = tool_calling_tokenizer(world)
        model = build_tiny_model(tokenizer, size="tiny", seed=0, max_positions=2048)
        model.to("cuda" if torch.cuda.is_available() else "cpu")
        loss = warm_start_tool_call(model, tokenizer, rows[0]["prompt"], factory().search, steps=a.warm_steps)
        print(json.dumps({"warm_start_call_loss_nats": round(loss, 4)}), flush=True)

    args = GRPOLLDSConfig(
        output_dir=a.out,
        max_steps=a.steps,
        per_device_train_batch_size=a.batch,
        num_generations=a.num_generations,
        num_iterations=a.num_iterations,
        gradient_accumulation_steps=a.grad_accum,
        learning_rate=a.lr,
        beta=0.0,
        max_completion_length=a.max_completion_length,
        max_tool_calling_iterations=a.max_tool_calls,
        bf16=torch.cuda.is_available(),
        gradient_checkpointing=a.gradient_checkpointing,
        use_vllm=a.use_vllm,
        vllm_mode="colocate",
        logging_steps=1,
        disable_tqdm=True,
        report_to="none",
        save_strategy="no",
        llds_lambda=a.llds_lambda,
        llds_gate=a.llds_gate,
    )
    trainer = GRPOLLDSTrainer(
        model=model,
        args=args,
        reward_funcs=[exact_match_reward, *([_search_bonus(a.search_bonus)] if a.search_bonus else [])],
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        environment_factory=factory,
        callbacks=[PrintSteps()],
    )
    trainer.train()


if __name__ == "__main__":
    main()
