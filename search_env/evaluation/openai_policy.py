"""`OpenAIPolicy`: any OpenAI-compatible endpoint (vLLM, llama.cpp server, SGLang, commercial APIs).

Two ways to show the episode to the model:
- `mode="chat"` (`/chat/completions`): the prompt and each env observation are user messages, the
  policy's turns assistant messages;
- `mode="completions"` (`/completions`): the whole transcript as one prompt, observations appended
  to the model's own text exactly as Search-R1's rollout does (for base models and models trained
  that way; the server applies no chat template).
Generation stops at `</search>` / `</answer>`; the API strips the stop string, so it is put back.
Requests go through the project's one retry policy (search_env.http_client.JsonHttpClient): 408,
409, 429, 5xx (search_env.http_client.OPENAI_RETRY_STATUSES), timeouts and connection errors are
retried with jittered exponential backoff
(honouring Retry-After), and a failure pauses all of this policy's requests until its backoff is
over, so a server that serves one request at a time is not sent more while it is behind.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any, Literal

from search_env.evaluation.policy import STOP_STRINGS
from search_env.evaluation.transcript import Transcript
from search_env.http_client import OPENAI_RETRY_STATUSES, JsonHttpClient, RequestRefused, ServiceUnavailable

Mode = Literal["chat", "completions"]
# llama.cpp's `llama-server` port: not the retriever's 8000 (nor the env server's 8001), so a
# forgotten --base-url never sends chat requests to our own retriever. vLLM users pass theirs.
DEFAULT_BASE_URL = "http://127.0.0.1:8080/v1"
_OPEN_TAG = re.compile(r"<(search|answer)>")


class OpenAIPolicyError(RuntimeError):
    """The endpoint refused the request, answered something unexpected, or stayed unavailable after
    every retry."""


class EndpointUnavailable(ServiceUnavailable, OpenAIPolicyError):
    """No answer (timeouts, connection errors, 5xx) after every retry."""


class EndpointRefused(RequestRefused, OpenAIPolicyError):
    """A 4xx other than 408/409/429 (a wrong model name, a prompt longer than the context...)."""


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
        retries: int = 3,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        name: str | None = None,
    ):
        """`timeout`: seconds for each request (connect, send, and each read); `retries`: attempts after
        the first; `backoff` / `max_backoff`: the first and the longest sleep between attempts (s)."""
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
        self.name = name or f"openai:{model}"
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        self._http = JsonHttpClient(
            self.base_url,
            what="OpenAI-compatible endpoint",
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            max_backoff=max_backoff,
            token=key or "",
            unavailable=EndpointUnavailable,
            refused=EndpointRefused,
            retry_statuses=OPENAI_RETRY_STATUSES,
            shared_backoff=True,
        )

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

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        reply = await self._http.arequest("POST", path, json=body)
        if not isinstance(reply, dict):
            raise OpenAIPolicyError(f"unexpected response from {self.base_url + path}: {str(reply)[:500]}")
        return reply

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
        await self._http.aclose()


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
