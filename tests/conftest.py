"""Shared fixtures: tiny CIFAR-10 copies in both real on-disk formats, and an isolated cache; the tiny data and
helpers that more than one test file uses (MNIST idx files, an image folder, text and time series, paired images,
callback runs on CIFAR-10) and the two-process DDP runner."""

from __future__ import annotations

import gzip
import importlib.util
import math
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

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


# ---------------------------------------------------------------------------------- DDP (2 CPU processes, gloo)
def run_ddp_script(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    """Write ``source`` to ``tmp_path/ddp_fit.py`` and run it in a fresh interpreter (one thread a process, warnings
    off: the script's ranks print what the test checks); the caller checks the return code and the output."""
    script = tmp_path / "ddp_fit.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, str(script)], check=False, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=150)


# ------------------------------------------------------------- MNIST / Fashion-MNIST: tiny idx files (torchvision's)
def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """An idx file as LeCun distributes it: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, raw bytes."""
    data = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


def make_raw(root: Path, name: str, gz: bool, n_train: int = 40, n_test: int = 20) -> Path:
    """``root/<name>/raw/`` with the four idx files; image i is a bar whose length encodes its label (learnable)."""
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, y in enumerate(labels):
            images[i, 4:24, 4 : 6 + 2 * y] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return root


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    return make_raw(tmp_path, "MNIST", gz=False)


# Trainer arguments of the tiny generative runs: nothing logged, printed or saved.
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}


# ------------------------------------------------------------------------------------------ image folder (classes)
@pytest.fixture
def image_root(tmp_path):
    """data/tiny/{train,val}/{ants,bees}/*.png, odd sizes, 6 + 3 images per class; no test folder."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 3)):
        for c, cls in enumerate(("ants", "bees")):
            folder = tmp_path / "data" / "tiny" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 128, (30 + i, 40, 3)) + 120 * c  # classes differ in brightness
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return tmp_path / "data"


# ----------------------------------------------------------------------------------------- text and time series
TEXT = "".join(f"{i % 7} To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer!\n"
               for i in range(60))
TINY = {"embed_dim": 8, "hidden_size": 16, "num_layers": 2, "dropout": 0.0}  # a CharLSTM that trains in seconds


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    """96 months of trend + seasonality + noise, in the airline file's format."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(96.0)
    values = 100 + 2 * t + 20 * torch.sin(2 * math.pi * t / 12) + torch.randn(96, generator=g)
    rows = [f"{1949 + i // 12}-{i % 12 + 1:02d}-01,{v:.1f}" for i, v in enumerate(values.tolist())]
    path = tmp_path / "series.csv"
    path.write_text("Month,passengers\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------- paired images
def write_ab(folder: Path, n: int, size=(64, 32), same_halves=False, seed=0) -> None:
    """n AB files: a random A on the left; B on the right (a copy of A when ``same_halves``, else A's negative)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(n):
        a = rng.integers(0, 256, (h, w // 2, 3), dtype=np.uint8)
        b = a if same_halves else 255 - a
        Image.fromarray(np.concatenate([a, b], 1)).save(folder / f"{i:03d}.png")


def read_png(path) -> np.ndarray:
    """The pixels of an image file (H, W[, C]), the file closed again."""
    with Image.open(path) as image:
        return np.array(image)


@pytest.fixture
def ab_data(tmp_path) -> Path:
    root = tmp_path / "pairs"
    write_ab(root / "train", 6)
    write_ab(root / "val", 3, seed=1)
    return tmp_path


# ------------------------------------------------------------------------------- training callbacks on CIFAR-10
def tiny_trainer(tmp_path, callbacks, **kwargs):
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=3, limit_val_batches=1,
                    num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False, default_root_dir=tmp_path)
    return L.Trainer(callbacks=callbacks, **{**defaults, **kwargs})


def tiny_data(folder, batch_size=7):
    from zoo.datamodules.cifar import CIFAR10DataModule

    return CIFAR10DataModule(data_dir=str(folder), batch_size=batch_size, val_size=10)


@pytest.fixture
def run_ckpt(cifar_folder, tmp_path, monkeypatch) -> Path:
    """A Lightning checkpoint (and LightningCLI's config.yaml) from a 2-step CLI fit of the classic CNN on the tiny
    CIFAR-10 folder (ZOO_DATA_DIR points at it for the rest of the test)."""
    from zoo.cli import main

    monkeypatch.setenv("ZOO_DATA_DIR", str(cifar_folder))
    root = tmp_path / "fixture_run"
    assert main(["fit", "--model", "CifarCNN", "--data", "CIFAR10DataModule", "--data.val_size", "10",
                 "--data.batch_size", "16", "--trainer.max_steps", "2", "--trainer.default_root_dir", str(root),
                 "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]) == 0
    (ckpt,) = root.glob("cifarcnn/version_0/checkpoints/*.ckpt")
    return ckpt


@pytest.fixture
def exported(run_ckpt, tmp_path) -> Path:
    """``run_ckpt`` exported as the card ``tiny_cnn`` (with its test metrics) in ``tmp_path/published``."""
    from zoo import hub

    return hub.export(run_ckpt, "tiny_cnn", tmp_path / "published")


@pytest.fixture
def teacher_card(run_ckpt, tmp_path) -> Path:
    """``run_ckpt`` exported as the card ``teacher``, without a test run (no metrics)."""
    from zoo import hub

    return hub.export(run_ckpt, "teacher", tmp_path / "published", test=False)
