"""searchgym's environment suite: protocol, rewards, data sets, retriever client and the embedded world.

Importing it registers the Gymnasium ids (see `search_env.registration`).
"""

from search_env.registration import register_envs

__version__ = "0.1.0"

register_envs()
