"""`OpenAIPolicy`: any OpenAI-compatible endpoint (vLLM, llama.cpp server, SGLang, commercial APIs).

Two ways to show the episode to the model:
- `mode="chat"` (`/chat/completions`): the prompt and each env observation are user messages, the
  policy's turns assistant messages;
- `mode="completions"` (`/completions`): the whole transcript as one prompt, observations appended
  to the model's own text exactly as Search-R1's rollout does (for base models and models trained
  that way; the server applies no chat template).
Generation stops at `</search>` / `</answer>`; the API strips the stop string, so it is put back.
429s, 5xx and connection errors are retried with exponential backoff (honouring Retry-After).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Sequence
from typing import Any, Literal

import httpx

from search_env.evaluation.policy import STOP_STRINGS
from search_env.evaluation.transcript import Transcript

Mode = Literal["chat", "completions"]
DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_OPEN_TAG = re.compile(r"<(search|answer)>")


class OpenAIPolicyError(RuntimeError):
    """The endpoint refused the request, or stayed unavailable after every retry."""


class OpenAIPolicy:
    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        *,
        mode: Mode = "chat",
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        temperature: float = 0.0,
        max_tokens: int = 500,
        stop: Sequence[str] = STOP_STRINGS,
        system_prompt: str | None = None,
        extra_body: dict[str, Any] | None = None,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        name: str | None = None,
    ):
        if mode not in ("chat", "completions"):
            raise ValueError(f"mode must be 'chat' or 'completions', got {mode!r}")
        self.model = model
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        self.mode = mode
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stop = list(stop)
        self.system_prompt = system_prompt
        self.extra_body = dict(extra_body or {})
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.name = name or f"openai:{model}"
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    # -- request ----------------------------------------------------------------------------------
    def request_body(self, transcript: Transcript) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) of the request for the next turn."""
        body: dict[str, Any] = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stop": self.stop,
            **self.extra_body,
        }
        if self.mode == "chat":
            messages = transcript.as_messages()
            if self.system_prompt:
                messages = [{"role": "system", "content": self.system_prompt}, *messages]
            return "/chat/completions", body | {"messages": messages}
        return "/completions", body | {"prompt": transcript.as_text()}

    def _http(self) -> httpx.AsyncClient:
        # An AsyncClient's connections belong to one event loop; a new asyncio.run needs a new client.
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(timeout=self.timeout, headers=self._headers)
            self._client_loop = loop
        return self._client

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        last = ""
        for attempt in range(self.retries + 1):
            delay = min(self.max_backoff, self.backoff * 2**attempt)
            try:
                response = await self._http().post(url, json=body)
            except httpx.TransportError as err:
                last = f"{type(err).__name__}: {err}"
            else:
                if response.status_code < 300:
                    return response.json()
                last = f"HTTP {response.status_code}: {response.text[:500]}"
                if response.status_code not in RETRY_STATUSES and response.status_code < 500:
                    raise OpenAIPolicyError(f"{url} refused the request: {last}")
                delay = _retry_after(response, delay, self.max_backoff)
            if attempt < self.retries:
                await asyncio.sleep(delay)
        raise OpenAIPolicyError(f"{url} unavailable after {self.retries + 1} attempts: {last}")

    # -- policy -----------------------------------------------------------------------------------
    async def act(self, transcript: Transcript) -> str:
        path, body = self.request_body(transcript)
        reply = await self._post(path, body)
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") if self.mode == "chat" else choice["text"]
        except (KeyError, IndexError, TypeError, AttributeError) as err:
            raise OpenAIPolicyError(f"unexpected response from {self.base_url + path}: {str(reply)[:500]}") from err
        return restore_stop(text or "", choice, self.stop)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def restore_stop(text: str, choice: dict[str, Any], stop: Sequence[str]) -> str:
    """Put back the stop string the API removed: vLLM names it in `stop_reason`; otherwise a
    `finish_reason` of "stop" after an unclosed `<search>`/`<answer>` means its closing tag."""
    if any(text.endswith(s) for s in stop):
        return text
    reason = choice.get("stop_reason")
    if isinstance(reason, str) and reason in stop:
        return text + reason
    if choice.get("finish_reason") == "stop":
        opened = list(_OPEN_TAG.finditer(text))
        if opened:
            closing = f"</{opened[-1].group(1)}>"
            if closing in stop and closing not in text[opened[-1].end() :]:
                return text + closing
    return text


def _retry_after(response: httpx.Response, default: float, cap: float) -> float:
    try:
        return min(cap, max(0.0, float(response.headers.get("retry-after", ""))))
    except ValueError:
        return default
