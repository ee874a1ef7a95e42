"""Gymnasium ids of searchgym's envs; registered when `search_env` is imported.

    import search_env, gymnasium
    env = gymnasium.make("searchgym/SearchQA-v0", retriever_url="http://127.0.0.1:8000")
    envs = gymnasium.make_vec("searchgym/SearchQA-v0", num_envs=16)   # one /retrieve per step
    remote = gymnasium.make("searchgym/RemoteSearchQA-v0", server_url="http://127.0.0.1:8001")
    sessions = gymnasium.make_vec("searchgym/RemoteSearchQA-v0", num_envs=64, server_url=...)  # one request per step

(`gymnasium.make("search_env:searchgym/SearchQA-v0")` imports the module itself.)
"""

from __future__ import annotations

import gymnasium

_LOCAL = "search_env.search_qa_env:SearchQAEnv"
_VECTOR = "search_env.vector_env:SearchQAVectorEnv"
_REMOTE = "search_env.remote_env:RemoteSearchEnv"
_REMOTE_VECTOR = "search_env.remote_vector_env:RemoteSearchVectorEnv"

ENV_IDS = {
    # The embedded world, every question; any data set through data=..., split=...
    "searchgym/SearchQA-v0": {},
    "searchgym/SearchQA-SingleHop-v0": {"hops": (1,)},
    "searchgym/SearchQA-MultiHop-v0": {"hops": (2, 3)},
}
REMOTE_ID = "searchgym/RemoteSearchQA-v0"


def register_envs() -> None:
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, entry_point=_LOCAL, vector_entry_point=_VECTOR, kwargs=kwargs)
    if REMOTE_ID not in gymnasium.registry:
        gymnasium.register(id=REMOTE_ID, entry_point=_REMOTE, vector_entry_point=_REMOTE_VECTOR)
