"""Checks made before any model is loaded: a run that cannot reach its env fails in seconds."""

from __future__ import annotations

import httpx

from search_env.http_client import ServiceUnavailable, parse_urls
from search_env.remote_env import EnvServerRefused, RemoteSearchEnv
from search_env.retrieval_schema import refused_topk_limit
from search_env.world_pairing import WorldMismatch, check_world_pairing, fetch_info, world_preset
from trainer.config import ENV_VARIABLES, EnvSection

ENV_VARIABLE_OF = {key: variable for variable, key in ENV_VARIABLES.items()}


class EnvUnreachable(RuntimeError):
    """The retrieval server (or env server) of the run does not answer its /health."""


class LimitMismatch(ValueError):
    """A setting of the run is beyond what its retrieval server accepts (`limits` in its `GET /info`):
    every search would be refused, so the run stops before any model is loaded."""


def check_limits(env: EnvSection, info: object, base: str) -> None:
    """`env.topk` against the `max_topk` of the retriever's `/info` body `info` (Search-R1's server has no
    /info: unchecked). Raises `LimitMismatch` naming both limits and how to raise the server's."""
    max_topk = refused_topk_limit(env.topk, info)
    if max_topk is not None:
        raise LimitMismatch(
            f"env.topk={env.topk} but the retrieval server at {base} accepts topk <= {max_topk} (its --max-topk): "
            "lower env.topk or restart the server with a larger --max-topk"
        )


def check_env_reachable(env: EnvSection, timeout: float = 10.0, *, retriever_too: bool = False) -> None:
    """The run's env server (env.env_url) or, without one, its retrieval server answers /health with 200;
    `retriever_too`: the retrieval server as well, even with an env server (the embedded policy's warm
    start plays scripted episodes against it). A retrieval server checked must also serve the corpus of
    env.data when that is an embedded world, and an env server must accept a session on it (its retriever
    serves that world). Raises `EnvUnreachable` naming the URL and the key, `WorldMismatch` naming the
    world and what the retriever serves, or `LimitMismatch` for a setting the retriever would refuse.
    Each replica of a URL list is checked, the first that fails named."""
    targets = []
    if env.env_url:
        targets += [(url, "env server", "agent-server env", "env.env_url") for url in parse_urls(env.env_url)]
    if not env.env_url or retriever_too:
        targets += [
            (url, "retrieval server", "agent-server retriever", "env.retriever_url")
            for url in parse_urls(env.retriever_url)
        ]
    for url, what, command, key in targets:
        _check(url, what, command, key, timeout)
        if key == "env.env_url" and world_preset(env.data) is not None:
            _check_env_session(env, url, timeout)
        if key == "env.retriever_url":
            base = url.rstrip("/").removesuffix("/retrieve")
            served = fetch_info(base)  # None for an /info behind another token, or none (Search-R1's server)
            if served is not None:
                check_limits(env, served, base)
                if world_preset(env.data) is not None:
                    check_world_pairing(env.data, served, base)


def _check(url: str, what: str, command: str, key: str, timeout: float) -> None:
    base = url.rstrip("/").removesuffix("/retrieve")
    try:
        response = httpx.get(base + "/health", timeout=timeout)
    except httpx.TransportError as err:
        raise EnvUnreachable(
            f"the {what} at {base} is unreachable ({type(err).__name__}): start it (`{command} ...`) or fix {key}"
            f" (or ${ENV_VARIABLE_OF[key]})"
        ) from err
    if response.status_code != 200:
        raise EnvUnreachable(f"the {what} at {base} is not ready: /health answered {response.status_code}")


def _check_env_session(env: EnvSection, url: str, timeout: float) -> None:
    """Create (and close) one session on env.data: an env server whose retriever serves another world
    refuses it with 409 and WorldMismatch's message (agent_server.env.world_check), raised here as
    `WorldMismatch` before any model is loaded. Other refusals (an unknown data set: 422) raise
    `EnvServerRefused`; a slow answer (the server generating the world) is left to the run."""
    options = {"data": env.data, "split": env.split, "data_config": env.data_config}
    try:
        RemoteSearchEnv(url, timeout=timeout, retries=0, **{k: v for k, v in options.items() if v is not None}).close()
    except EnvServerRefused as err:
        if err.status == 409:
            raise WorldMismatch(err.message) from None
        raise
    except ServiceUnavailable:
        return
