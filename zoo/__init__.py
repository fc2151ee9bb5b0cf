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
import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__version__ = "0.1.0"


@dataclass(frozen=True)
class ModelEntry:
    name: str
    cls: type
    fixed: dict[str, Any] = field(default_factory=dict)  # constructor arguments that define a variant
    description: str = ""
    tiny: dict[str, Any] = field(default_factory=dict)  # arguments of a small, offline instance for smoke tests


_MODELS: dict[str, ModelEntry] = {}


def register_model(
    name: str, description: str = "", tiny: dict[str, Any] | None = None, **fixed: Any
) -> Callable[[type], type]:
    """Class decorator: register a LightningModule under ``name`` (with ``fixed`` arguments for a variant).

    ``tiny``: constructor arguments of a small instance that needs no download (the registry sweep in
    tests/test_registry.py trains it on ``model.example_batch()``)."""

    def wrap(cls: type) -> type:
        add_model(name, cls, description=description or (cls.__doc__ or "").strip().split("\n")[0], tiny=tiny,
                  **fixed)
        return cls

    return wrap


def add_model(name: str, cls: type, description: str = "", tiny: dict[str, Any] | None = None, **fixed: Any) -> None:
    """Register ``cls`` (plus ``fixed`` constructor arguments) under ``name``; a duplicate name raises."""
    if name in _MODELS:
        raise ValueError(f"A model named {name!r} is already registered (by {_MODELS[name].cls.__qualname__}).")
    _MODELS[name] = ModelEntry(name, cls, dict(fixed), description, dict(tiny or {}))


def list_models(pattern: str = "*") -> list[str]:
    """Sorted registered names matching a shell-style ``pattern``."""
    register_all()
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern))


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; an unknown name raises KeyError listing the registered ones."""
    register_all()
    if name not in _MODELS:
        close = fnmatch.filter(_MODELS, f"*{name}*") or list(_MODELS)
        raise KeyError(f"Unknown model {name!r}. Registered models: {', '.join(sorted(close))} (see `zoo list`).")
    return _MODELS[name]


def constructor_arguments(cls: type) -> dict[str, inspect.Parameter]:
    """The arguments ``cls(...)`` accepts, following ``**kwargs`` up the base classes as LightningCLI does
    (a subclass declares its own arguments and passes the shared ones on)."""
    arguments: dict[str, inspect.Parameter] = {}
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]  # without self
        for p in params:
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                arguments.setdefault(p.name, p)
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return arguments


def get_model(name: str, **kwargs: Any):
    """A new instance of the registered model ``name``; ``kwargs`` go to its constructor. Randomly initialised,
    except where an argument asks for pretrained weights (``efficientnet_lite0``'s ``pretrained=True``: ImageNet)."""
    entry = model_entry(name)
    model = entry.cls(**{**entry.fixed, **kwargs})
    if hasattr(model, "load_pretrained"):  # weights a constructor argument names are loaded here, not at fit time
        model.load_pretrained()
    return model


def transforms(source: str):
    """The preprocessing of a published checkpoint (or a card path) as a torchvision transform; see zoo.preprocessing."""
    from zoo.hub import resolve
    from zoo.preprocessing import transforms as _transforms

    card, _ = resolve(source)
    return _transforms(card)


def ensemble(sources: list[str]):
    """The mean class probabilities of published classifiers of the same classes; see zoo.ensembles."""
    from zoo.ensembles import ensemble as _ensemble

    return _ensemble(sources)


def load(source: str, **overrides: Any):
    """A pretrained model in eval mode, from a published name, a path or a URL. See ``zoo.hub.load``."""
    from zoo.hub import load as _load

    return _load(source, **overrides)


def register_all() -> None:
    """Import every architecture file of the package (a ``zoo/*.py`` that uses ``@register_model``), once: adding
    an architecture is adding its file. The registry's getters call this, so ``import zoo`` itself stays light."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    for info in pkgutil.iter_modules(__path__):
        path = Path(__path__[0]) / f"{info.name}.py"
        if path.is_file() and "\n@register_model(" in path.read_text(encoding="utf-8"):
            importlib.import_module(f"{__name__}.{info.name}")


_DISCOVERED = False
