"""Where data and caches live: ``ZOO_DATA_DIR`` / ``ZOO_CACHE`` environment variables, with plain defaults."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The argument if given, else ``$ZOO_DATA_DIR``, else ``./data``."""
    return Path(data_dir or os.environ.get("ZOO_DATA_DIR") or "data").expanduser()


def cache_dir(*parts: str) -> Path:
    """A writable cache folder: ``$ZOO_CACHE``, else ``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``."""
    root = os.environ.get("ZOO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zoo"
    return Path(root).expanduser().joinpath(*parts)
