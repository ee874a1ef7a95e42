"""`OpenAIGenerator`: turns sampled by an OpenAI-compatible completions server (vLLM at GPU scale).

It POSTs `/v1/completions` with the prompts as token ids (vLLM takes a list of int lists as
`prompt`), the stop strings, `logprobs=1` and vLLM's `return_tokens_as_token_ids=True`, so every
returned token comes back as `"token_id:<id>"` with its log-prob: tokens in, tokens out, no
re-tokenising of the policy's text. The stop string's token is part of the returned tokens
(`include_stop_str_in_output` also keeps it in the text, for logging).

It serves evaluation (`search-trainer eval --openai-base-url`), not training: the server never
receives the trainer's updated weights, so after the first update its samples would come from the
initial model while the loss treats them as on-policy; the training config refuses
`rollout.backend: openai` (trainer.config.OPENAI_TRAINING_REFUSED). The sampler's log-probs are
returned for logging and comparison only.
429s, 5xx and connection errors are retried with exponential backoff, honouring Retry-After.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from trainer.rollout.generation import STOP_STRINGS, Generated

_TOKEN_PREFIX = "token_id:"


class OpenAIGeneratorError(RuntimeError):
    """The server refused the request, stayed unavailable after every retry, or answered without token ids."""


def _retryable(status: int) -> bool:
    return status == 429 or status >= 500


class OpenAIGenerator:
    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        *,
        batch_size: int = 256,
        concurrency: int = 4,
        timeout: float = 600.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        extra_body: dict[str, Any] | None = None,
    ):
        """`base_url` is the server root or its `/v1`; prompts are sent `batch_size` at a time, up to
        `concurrency` requests in flight (vLLM batches them itself)."""
        url = base_url.rstrip("/")
        self.url = (url if url.endswith("/v1") else url + "/v1") + "/completions"
        self.model = model
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.extra_body = dict(extra_body or {})
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(timeout=timeout, headers=headers)

    def generate(
        self,
        prompts: list[list[int]],
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop_strings: Sequence[str] = STOP_STRINGS,
    ) -> list[Generated]:
        body = {
            "model": self.model,
            "max_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "n": 1,
            "stop": list(stop_strings),
            "include_stop_str_in_output": True,
            "logprobs": 1,
            "return_tokens_as_token_ids": True,
            "skip_special_tokens": False,
        } | self.extra_body
        chunks = [prompts[i : i + self.batch_size] for i in range(0, len(prompts), self.batch_size)]
        if len(chunks) <= 1 or self.concurrency <= 1:
            answers = [self._complete(body | {"prompt": c}, len(c)) for c in chunks]
        else:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                answers = list(pool.map(lambda c: self._complete(body | {"prompt": c}, len(c)), chunks))
        return [g for answer in answers for g in answer]

    def _complete(self, body: dict[str, Any], n: int) -> list[Generated]:
        data = self._post(body)
        choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise OpenAIGeneratorError(f"asked for {n} completions, got {len(choices)}")
        return [self._parse(c) for c in choices]

    @staticmethod
    def _parse(choice: dict[str, Any]) -> Generated:
        logprobs = choice.get("logprobs") or {}
        tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
        if tokens is None or values is None:
            raise OpenAIGeneratorError(
                "the response has no logprobs.tokens / token_logprobs: the server must honour logprobs=1"
            )
        ids = []
        for tok in tokens:
            if not isinstance(tok, str) or not tok.startswith(_TOKEN_PREFIX):
                raise OpenAIGeneratorError(
                    f"the response's tokens are not token ids ({tok!r}): the server must support vLLM's "
                    "return_tokens_as_token_ids=True (vLLM >= 0.5.5) so the sampled ids come back as they are"
                )
            ids.append(int(tok[len(_TOKEN_PREFIX) :]))
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        # vLLM reports an EOS stop as finish_reason "stop" with stop_reason None.
        if reason == "stop" and choice.get("stop_reason") is None:
            reason = "eos"
        return Generated(ids, [float(v) if v is not None else 0.0 for v in values], reason,  # type: ignore[arg-type]
                         extra={"text": choice.get("text", "")})

    def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        delay = self.backoff
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                r = self.client.post(self.url, json=body)
            except httpx.TransportError as err:
                if last:
                    raise OpenAIGeneratorError(f"{self.url} unreachable after {self.retries} retries: {err}") from err
                time.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            if r.status_code < 400:
                return r.json()
            if not _retryable(r.status_code) or last:
                raise OpenAIGeneratorError(f"{self.url} answered {r.status_code}: {r.text[:500]}")
            wait = delay
            retry_after = r.headers.get("retry-after")
            if retry_after is not None:
                with contextlib.suppress(ValueError):  # an HTTP date: keep the backoff
                    wait = min(float(retry_after), self.max_backoff)
            time.sleep(wait)
            delay = min(delay * 2, self.max_backoff)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> OpenAIGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
