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
429s, 5xx and connection errors are retried by searchgym's one retry policy
(`search_env.http_client.JsonHttpClient`: exponential backoff with jitter, honouring Retry-After).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from search_env.http_client import OPENAI_RETRY_STATUSES, JsonHttpClient, RequestRefused, ServiceUnavailable
from trainer.rollout.generation import STOP_STRINGS, Generated

_TOKEN_PREFIX = "token_id:"


class OpenAIGeneratorError(RuntimeError):
    """The server refused the request, stayed unavailable after every retry, or answered without token ids."""


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
        root = base_url.rstrip("/").removesuffix("/v1")
        self.url = root + "/v1/completions"
        self.model = model
        self.batch_size = batch_size
        self.concurrency = concurrency
        self.extra_body = dict(extra_body or {})
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.http = JsonHttpClient(
            root,
            what="OpenAI-compatible server",
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            token=key or "",  # "" sends no Authorization (not searchgym's own token)
            retry_statuses=OPENAI_RETRY_STATUSES,
        )

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
        try:
            return self.http.request("POST", "/v1/completions", json=body)
        except RequestRefused as err:
            raise OpenAIGeneratorError(f"{self.url} answered {err.status}: {err.message[:500]}") from err
        except ServiceUnavailable as err:
            raise OpenAIGeneratorError(str(err)) from err

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> OpenAIGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
