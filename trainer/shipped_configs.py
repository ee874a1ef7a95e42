"""Where the configs in the repository's configs/ folder are, in a checkout and in an installed wheel.

A checkout has them at <repo>/configs; a wheel carries them as data files (pyproject.toml
[tool.setuptools.data-files]), installed under <prefix>/share/searchgym/configs, since configs/ is
not a package (docker-compose.yml mounts it and the README names its files by that path).
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path

CHECKOUT_CONFIGS = Path(__file__).resolve().parent.parent / "configs"
INSTALLED_SUBDIR = Path("share") / "searchgym" / "configs"


def config_dirs() -> list[Path]:
    """The folders searched, in order: the checkout's configs/, then the install prefixes' copies."""
    prefixes = [sysconfig.get_path("data"), sys.prefix, sys.base_prefix]
    return [CHECKOUT_CONFIGS, *(Path(p) / INSTALLED_SUBDIR for p in dict.fromkeys(prefixes))]


def shipped_config(name: str) -> Path:
    """The path of the shipped config `name` (e.g. "embedded.yaml"); FileNotFoundError naming where it looked."""
    for folder in config_dirs():
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"shipped config {name} not found in {', '.join(map(str, config_dirs()))}")
