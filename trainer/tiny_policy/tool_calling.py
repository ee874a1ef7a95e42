"""The tiny policy made to speak a chat template's tool calls, for running TRL's tool loop (and the
LLDS plugin) offline on a CPU or a bare GPU box: its tokenizer with Qwen2.5's chat template as TRL
ships it, and a short warm start towards calling the search tool."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from search_env.world.store import WorldPaths
from trainer.tiny_policy.tokenizer import train_tokenizer

#: What the warm-started policy searches for.
WARM_QUERY = "founded"


def tool_calling_tokenizer(world: WorldPaths) -> Any:
    """The tiny policy's tokenizer (no entity tokens) with TRL's Qwen2.5 chat template, its turn markers
    (``<|im_end|>`` the EOS, as in Qwen2.5) and tool-call tags. TRL recognises the template, so it sets
    the response parser and training template itself. Needs trl installed (the template is its file)."""
    import trl

    tokenizer = train_tokenizer(world, entity_tokens=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.add_tokens(["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>"])
    # The tool-call JSON's fixed parts, merged as a real model's BPE merges them (this one, trained on the
    # world's prose, spells JSON a character a token): a call is then ~12 tokens for the warm start to learn.
    tokenizer.add_tokens(['{"name": ', '"search"', ', "arguments": ', '{"query": ', f'"{WARM_QUERY}"', "}}"])
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.chat_template = (Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja").read_text()
    return tokenizer


def warm_start_tool_call(
    model: Any, tokenizer: Any, prompt: list[dict[str, str]], tool: Any, steps: int = 40, lr: float = 3e-3
) -> float:
    """SFT steps (AdamW) on one conversation, ``prompt`` then an assistant turn calling ``tool`` with
    ``{"query": WARM_QUERY}``; returns the call's last summed loss (nats). After 40 steps at 3e-3 the
    tiny model calls the tool in most sampled rollouts. The model stays on its device."""
    call = {"type": "function", "function": {"name": tool.__name__, "arguments": {"query": WARM_QUERY}}}
    head = tokenizer.apply_chat_template(prompt, tools=[tool], add_generation_prompt=True, return_dict=False)
    full = tokenizer.apply_chat_template(
        [*prompt, {"role": "assistant", "content": "", "tool_calls": [call]}], tools=[tool], return_dict=False
    )
    device = next(model.parameters()).device
    ids = torch.tensor([full], device=device)
    labels = ids.clone()
    labels[:, : len(head)] = -100
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    loss = torch.zeros(())
    for _ in range(steps):
        loss = model(input_ids=ids, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return loss.item() * (len(full) - len(head))
