"""`HFGenerator`: a turn for many prompts with Hugging Face transformers' `generate`.

Prompts are batched with LEFT padding (every row then ends where generation starts; the model's
position ids follow the attention mask), decoded with the KV cache, and stopped per row at the stop
strings or EOS. The sampler's log-prob of each token is the log-softmax of the processed scores
(after temperature and top-p), i.e. of the distribution it sampled from.

Those log-probs come from `_SamplerLogprobs`, the last logits processor, which applies temperature
and top-p itself (generate's own warpers are switched off: it puts custom processors before them)
and, one step later, reads which token was sampled. `output_scores` would give the same numbers but
keeps every step's (batch, vocab) scores alive; this keeps one step's.

transformers fills every generation setting the caller leaves unset from `model.generation_config`
(a checkpoint's `top_k=20`, `repetition_penalty=1.05`, ...) and then from global defaults (`top_k=50`).
Either would make the sampled distribution differ from the policy's softmax that the loss uses, so
each call swaps in a blank `generation_config` and sets every sampling field explicitly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from trainer.rollout.generation import STOP_STRINGS, Generated, stop_cut


class HFGenerator:
    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 32, device: str | torch.device | None = None):
        if tokenizer.pad_token_id is None:
            raise ValueError(
                "tokenizer has no pad token: set tokenizer.pad_token = ... (e.g. a reserved/unused token, or "
                "tokenizer.eos_token if you accept that padding and EOS share an id) before building HFGenerator"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else next(model.parameters()).device
        self.pad_token_id = int(tokenizer.pad_token_id)
        self.eos_token_ids = self._eos_ids(model, tokenizer)
        self._stops: dict[tuple[str, ...], Any] = {}

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
        # Chat checkpoints often end turns with several ids (Qwen: <|im_end|> and <|endoftext|>).
        ids: list[int] = []
        config_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        for value in (config_eos, tokenizer.eos_token_id):
            for i in value if isinstance(value, list | tuple) else [value]:
                if i is not None and int(i) not in ids:
                    ids.append(int(i))
        return ids

    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop_strings: Sequence[str] = STOP_STRINGS,
    ) -> list[Generated]:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if temperature < 0 or not 0 < top_p <= 1:
            raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")
        if any(not p for p in prompts):
            raise ValueError("every prompt needs at least one token")
        out: list[Generated] = []
        with self._inference():
            for start in range(0, len(prompts), self.batch_size):
                chunk = prompts[start : start + self.batch_size]
                out += self._generate_chunk(chunk, max_new_tokens, temperature, top_p, list(stop_strings))
        return out

    @contextlib.contextmanager
    def _inference(self) -> Iterator[None]:
        """eval() (no dropout) and no grad while sampling; the model's training mode comes back after."""
        was_training = self.model.training
        saved_config = self.model.generation_config
        from transformers import GenerationConfig

        self.model.eval()
        self.model.generation_config = GenerationConfig()
        try:
            with torch.no_grad():
                yield
        finally:
            self.model.generation_config = saved_config
            self.model.train(was_training)

    def _stop_criteria(self, stop: list[str]) -> list[Any]:
        """generate's stop-string matcher, built once per stop list: `generate(stop_strings=...)` would
        re-read and re-sort the whole vocab on every call to find its cached tables."""
        if not stop:
            return []
        key = tuple(stop)
        if key not in self._stops:
            from transformers import StopStringCriteria

            self._stops[key] = StopStringCriteria(self.tokenizer, list(stop))
        return [self._stops[key]]

    def _config(self, max_new_tokens: int, sample: bool) -> Any:
        from transformers import GenerationConfig

        # Temperature and top-p are _SamplerLogprobs' job; every other field that reshapes the
        # distribution is set to its neutral value.
        return GenerationConfig(
            max_new_tokens=max_new_tokens,
            eos_token_id=self.eos_token_ids or None,
            pad_token_id=self.pad_token_id,
            use_cache=True,
            repetition_penalty=1.0,
            # (greedy: generate warns about sampling-only fields, so they are set only when sampling)
            **({"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0} if sample else {"do_sample": False}),
        )

    def _generate_chunk(
        self, prompts: list[list[int]], max_new_tokens: int, temperature: float, top_p: float, stop: list[str]
    ) -> list[Generated]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, p in enumerate(prompts):  # left padding
            input_ids[row, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[row, width - len(p) :] = 1
        from transformers import LogitsProcessorList, StoppingCriteriaList

        recorder = _SamplerLogprobs(temperature, top_p)
        sequences = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            generation_config=self._config(max_new_tokens, temperature > 0),
            logits_processor=LogitsProcessorList([recorder]),
            stopping_criteria=StoppingCriteriaList(self._stop_criteria(stop)),
        )
        new = sequences[:, width:].cpu()
        logprobs = recorder.finish(new.to(self.device)).cpu()
        out = []
        for row in range(len(prompts)):
            ids = new[row].tolist()
            end, reason = stop_cut(ids, self.tokenizer, stop, self.eos_token_ids)
            out.append(Generated(ids[:end], logprobs[row, :end].tolist(), reason))
        return out


class _SamplerLogprobs:
    """A logits processor: applies temperature and top-p, and records each sampled token's log-prob.

    Called before step k's sampling with the ids up to token k-1, it scores token k-1 against the
    distribution it kept from the step before; `finish` scores the last token.
    """

    def __init__(self, temperature: float, top_p: float):
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.warpers: list[Any] = []
        if temperature > 0 and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if temperature > 0 and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))
        self.steps: list[torch.Tensor] = []
        self._last: torch.Tensor | None = None  # (B, V) processed scores of the latest step

    def _score(self, tokens: torch.Tensor) -> torch.Tensor:
        assert self._last is not None
        picked = self._last.gather(-1, tokens[:, None])[:, 0]
        return picked - torch.logsumexp(self._last, dim=-1)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        if self._last is not None:
            self.steps.append(self._score(input_ids[:, -1]))
        self._last = scores.float()
        return scores

    def finish(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """(B, n) log-probs of the n generated tokens. generate may have run (and then undone) a step
        past the end, so only the first n recorded steps count."""
        n = new_tokens.shape[1]
        if n == 0:
            return torch.zeros((new_tokens.shape[0], 0))
        if len(self.steps) < n:
            self.steps.append(self._score(new_tokens[:, n - 1]))
        return torch.stack(self.steps[:n], dim=1)
