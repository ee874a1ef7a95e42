"""The tiny policy's architecture: a few-million-parameter Llama that trains on a laptop CPU.

A standard `LlamaForCausalLM` (not a custom module) so every part of the trainer that takes "any
Hugging Face causal LM" runs on it unchanged, and `save_pretrained` / `from_pretrained` just work.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

# name -> (hidden, layers, heads, mlp width). Head size 32: enough for copying names out of passages.
SIZES: dict[str, tuple[int, int, int, int]] = {
    "tiny": (128, 2, 4, 384),
    "small": (128, 4, 4, 384),
    "base": (192, 4, 6, 512),
    "medium": (256, 4, 8, 704),
    "large": (256, 6, 8, 704),
}


def tiny_model_config(tokenizer: Any, size: str = "small", max_positions: int = 1024) -> LlamaConfig:
    """A Llama config sized by `size` (one of SIZES) for `tokenizer`'s vocabulary and special ids."""
    try:
        hidden, layers, heads, mlp = SIZES[size]
    except KeyError:
        raise ValueError(f"unknown tiny model size {size!r}; known: {sorted(SIZES)}") from None
    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        rope_theta=10000.0,
        tie_word_embeddings=True,  # a third of the parameters otherwise, and copying reads the same table
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        initializer_range=0.02,
    )


def build_tiny_model(tokenizer: Any, size: str = "small", seed: int = 0, max_positions: int = 1024) -> LlamaForCausalLM:
    """A freshly initialised tiny policy; the same seed gives the same weights."""
    config = tiny_model_config(tokenizer, size, max_positions)
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    generation = model.generation_config
    generation.pad_token_id = tokenizer.pad_token_id
    generation.eos_token_id = tokenizer.eos_token_id
    generation.bos_token_id = tokenizer.eos_token_id
    return model
