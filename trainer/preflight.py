"""Checks made before any model is loaded: a run that cannot reach its env fails in seconds."""

from __future__ import annotations

import httpx

from trainer.config import EnvSection


class EnvUnreachable(RuntimeError):
    """The retrieval server (or env server) of the run does not answer its /health."""


def check_env_reachable(env: EnvSection, timeout: float = 10.0) -> None:
    if env.env_url:
        url, what, command, key = env.env_url, "env server", "agent-server env", "env.env_url"
    else:
        url, what, command, key = env.retriever_url, "retrieval server", "agent-server retriever", "env.retriever_url"
    base = url.rstrip("/").removesuffix("/retrieve")
    try:
        response = httpx.get(base + "/health", timeout=timeout)
    except httpx.TransportError as err:
        raise EnvUnreachable(
            f"the {what} at {base} is unreachable ({type(err).__name__}): start it (`{command} ...`) or fix {key}"
        ) from err
    if response.status_code != 200:
        raise EnvUnreachable(f"the {what} at {base} is not ready: /health answered {response.status_code}")
