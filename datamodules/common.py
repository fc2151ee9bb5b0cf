"""Where data and caches live: ``ZOO_DATA_DIR`` / ``ZOO_CACHE`` environment variables, with plain defaults."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """The argument if given, else ``$ZOO_DATA_DIR``, else ``./data``."""
    return Path(data_dir or os.environ.get("ZOO_DATA_DIR") or "data").expanduser()


CIFAR10_LICENCE = "CIFAR-10 (Krizhevsky, 2009): no explicit licence, customarily used for research"
# Licences of the datasets the zoo knows (those in ../shared/data and their usual names), by folder or file name.
# A card whose licence is None was trained on data of unknown licence: do not publish its weights.
LICENCES = {
    "cifar10": CIFAR10_LICENCE,
    "cifar10-jpg": CIFAR10_LICENCE,
    "tinyshakespeare": "Shakespeare's works (public domain), compiled by A. Karpathy for char-rnn",
    "airline-passengers.csv": "Box-Jenkins airline passengers (Series G): public domain",
}


def known_licence(path: str | os.PathLike) -> str | None:
    """The licence of the known dataset that ``path`` is in (or is), else None."""
    return next((LICENCES[part] for part in reversed(Path(path).parts) if part in LICENCES), None)


def cache_dir(*parts: str) -> Path:
    """A writable cache folder: ``$ZOO_CACHE``, else ``$XDG_CACHE_HOME/zoo``, else ``~/.cache/zoo``."""
    root = os.environ.get("ZOO_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "zoo"
    return Path(root).expanduser().joinpath(*parts)
