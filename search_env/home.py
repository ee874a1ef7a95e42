"""Where searchgym keeps generated worlds and built indexes."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

HOME_ENV = "SEARCHGYM_HOME"


def searchgym_home() -> Path:
    """`$SEARCHGYM_HOME`, or searchgym's folder under the user's cache directory."""
    root = os.environ.get(HOME_ENV)
    path = Path(root).expanduser() if root else Path(platformdirs.user_cache_dir("searchgym"))
    path.mkdir(parents=True, exist_ok=True)
    return path
