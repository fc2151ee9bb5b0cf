"""zoo: a PyTorch Lightning model zoo.

Usage:
    import zoo
    zoo.list_models("cifar*")                  # registered names
    model = zoo.get_model("cifar_resnet")      # a fresh LightningModule
    model = zoo.load("cifar_resnet_cifar10")   # a published checkpoint, in eval mode

A registry is a dict, a decorator and two getters (as in torchvision's models/_api.py and timm's _registry.py).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any, Callable

__version__ = "0.1.0"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    fixed: dict[str, Any] = field(default_factory=dict)  # constructor arguments that define a variant
    description: str = ""


_MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, description: str = "", **fixed: Any) -> Callable[[type], type]:
    """Class decorator: register a LightningModule under ``name`` (with ``fixed`` arguments for a variant)."""

    def wrap(cls: type) -> type:
        add_model(name, cls, description=description or (cls.__doc__ or "").strip().split("\n")[0], **fixed)
        return cls

    return wrap


def add_model(name: str, cls: type, description: str = "", **fixed: Any) -> None:
    """Register ``cls`` (plus ``fixed`` constructor arguments) under ``name``; a duplicate name raises."""
    if name in _MODELS:
        raise ValueError(f"A model named {name!r} is already registered (by {_MODELS[name].cls.__qualname__}).")
    _MODELS[name] = ModelEntry(name, cls, dict(fixed), description)


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style ``pattern``."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name}*") or list(_MODELS)
        raise KeyError(f"Unknown model {name!r}. Registered models: {', '.join(sorted(close))} (see `zoo list`).")
    return _MODELS[name]


def get_model(name: str, **kwargs: Any):
    """A new, randomly initialised instance of the registered model ``name``; ``kwargs`` go to its constructor."""
    entry = model_entry(name)
    return entry.cls(**{**entry.fixed, **kwargs})


def load(source: str, **overrides: Any):
    """A pretrained model in eval mode, from a published name, a path or a URL. See ``zoo.hub.load``."""
    from zoo.hub import load as _load

    return _load(source, **overrides)


# Importing the architecture modules registers them.
from zoo import cifar_cnn, dcgan, efficientnet, forecaster, lstm, pix2pix, vae  # noqa: E402,F401
