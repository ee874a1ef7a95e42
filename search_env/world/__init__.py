"""The embedded world: a seeded fictional encyclopedia with questions that need searching.

`generate_world` builds it in memory; `ensure_world` writes it once into `$SEARCHGYM_HOME/worlds/`
and reuses it after.
"""

from search_env.world.config import SPLITS, VERSION, WORLD_PRESETS, WorldConfig, resolve_config
from search_env.world.entities import Entity
from search_env.world.generator import World, generate_world
from search_env.world.questions import DATA_SOURCE
from search_env.world.store import WorldPaths, ensure_world, write_world

__all__ = [
    "DATA_SOURCE",
    "SPLITS",
    "VERSION",
    "WORLD_PRESETS",
    "Entity",
    "World",
    "WorldConfig",
    "WorldPaths",
    "ensure_world",
    "generate_world",
    "resolve_config",
    "write_world",
]
