"""Shared fixtures: tiny CIFAR-10 copies in both real on-disk formats, and an isolated cache."""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from zoo.datamodules.cifar import CLASSES

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_script(name: str) -> ModuleType:
    """Import ``benchmarks/<name>.py`` (the scripts the README quotes) as a module; an import error fails the test."""
    if name in sys.modules:
        return sys.modules[name]
    if name != "_bench":
        benchmark_script("_bench")  # the scripts' shared helpers, imported by them as a sibling
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


SHARED_DATA = Path(os.environ.get("ZOO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own ZOO_CACHE, so caches never leak between tests or into the user's home."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("ZOO_CACHE", str(cache))
    monkeypatch.delenv("ZOO_DATA_DIR", raising=False)
    monkeypatch.setattr(sys, "argv", sys.argv[:1])  # tests call zoo.cli.main(args) as the `zoo` command would
    return cache


def _images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % len(CLASSES)
    # Class-dependent brightness makes the tiny set learnable: a model can beat chance on it.
    images = rng.integers(0, 64, (n, 32, 32, 3)) + (labels * 19)[:, None, None, None]
    return images.astype(np.uint8), labels.astype(np.int64)


@pytest.fixture
def cifar_pickles(tmp_path) -> Path:
    """``tmp/cifar-10-batches-py`` in torchvision's pickle format: 5 x 12 train images, 20 test images."""
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        x, y = _images(20 if name == "test_batch" else 12, seed=i)
        entry = {"batch_label": name, "labels": y.tolist(), "data": x.transpose(0, 3, 1, 2).reshape(len(x), -1)}
        with open(root / name, "wb") as f:
            pickle.dump(entry, f)
    return tmp_path


@pytest.fixture
def cifar_folder(tmp_path) -> Path:
    """``tmp/cifar10/{train,test}/<class>/*.png``: 6 train and 2 test PNGs per class."""
    from PIL import Image

    root = tmp_path / "cifar10"
    for split, n in (("train", 60), ("test", 20)):
        x, y = _images(n, seed=len(split))
        for i, (img, label) in enumerate(zip(x, y)):
            folder = root / split / CLASSES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i:04d}.png")
    return tmp_path
