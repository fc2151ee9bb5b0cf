"""CIFAR-10 as a LightningDataModule, decoded once into a uint8 cache and augmented batch-wise on the device.

Usage:
    dm = CIFAR10DataModule(data_dir="data", batch_size=512)
    # zoo fit --config configs/cifar_resnet.yaml --data.data_dir /path/to/data

Two on-disk formats are read, found automatically under ``data_dir``:
  * torchvision's ``cifar-10-batches-py/`` pickles (downloaded in ``prepare_data`` when online);
  * an ImageFolder layout ``train/<class>/*``, ``test/<class>/*`` (JPEG/PNG copies, e.g. Kaggle's), either directly
    in ``data_dir`` or in one of its sub-folders ``cifar10``, ``cifar10-jpg``, ``cifar10-png``, ``CIFAR10``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

from zoo.errors import UserError
from zoo.datamodules.common import CIFAR10_LICENCE, TensorBatches, TensorSplitLoaders, cache_dir, resolve_data_dir  # noqa: E501

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
IMAGE_FOLDER_NAMES = ("", "cifar10", "cifar10-jpg", "cifar10-png", "CIFAR10")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
PICKLE_DIR = "cifar-10-batches-py"


class CIFAR10NotFoundError(UserError, FileNotFoundError):
    pass


def find_cifar10(data_dir: Path) -> tuple[str, Path] | None:
    """Return ``("pickle", dir)`` or ``("folder", dir)`` for the first CIFAR-10 copy under ``data_dir``."""
    pickles = data_dir / PICKLE_DIR
    if (pickles / "data_batch_1").is_file() and (pickles / "test_batch").is_file():
        return "pickle", pickles
    for name in IMAGE_FOLDER_NAMES:
        root = data_dir / name
        if (root / "train").is_dir() and (root / "test").is_dir():
            return "folder", root
    return None


def _looked_at(data_dir: Path) -> list[str]:
    return [str(data_dir / PICKLE_DIR)] + [str(data_dir / n / s) for n in IMAGE_FOLDER_NAMES for s in ("train", "test")]


def read_pickles(root: Path) -> dict[str, np.ndarray]:
    """Read torchvision's ``cifar-10-batches-py`` batches into (N, 32, 32, 3) uint8 arrays and int64 labels."""

    def read(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for name in names:
            with open(root / name, "rb") as f:
                # These are plain dicts of numpy arrays; the files come from the official tarball (md5-checked by
                # torchvision on download), as torchvision.datasets.CIFAR10 reads them.
                entry = pickle.load(f, encoding="latin1")
            xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(entry.get("labels", entry.get("fine_labels")), dtype=np.int64))
        return np.concatenate(xs), np.concatenate(ys)

    train_x, train_y = read([f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = read(["test_batch"])
    return {"train_x": train_x, "train_y": train_y, "test_x": test_x, "test_y": test_y}


def read_image_folder(root: Path) -> dict[str, np.ndarray]:
    """Decode ``root/{train,test}/<class>/*`` into uint8 arrays; class ids follow the sorted folder names."""
    from PIL import Image

    out = {}
    for split in ("train", "test"):
        classes = sorted(d.name for d in (root / split).iterdir() if d.is_dir())
        if tuple(classes) != CLASSES:
            raise ValueError(f"{root / split} has class folders {classes}; expected the ten CIFAR-10 classes {CLASSES}.")
        xs, ys = [], []
        for label, name in enumerate(classes):
            files = sorted(p for p in (root / split / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            for path in files:
                with Image.open(path) as im:
                    img = np.asarray(im.convert("RGB"), dtype=np.uint8)
                if img.shape != (32, 32, 3):
                    raise ValueError(f"{path} is {img.shape[1]}x{img.shape[0]}; CIFAR-10 images are 32x32.")
                xs.append(img)
                ys.append(label)
        out[f"{split}_x"] = np.stack(xs)
        out[f"{split}_y"] = np.asarray(ys, dtype=np.int64)
    return out


def _fingerprint(kind: str, root: Path) -> str:
    """Cheap identity of a dataset copy: its path plus names, sizes and mtimes of its files."""
    h = hashlib.sha256(f"{kind}:{root.resolve()}".encode())
    for path in sorted(root.rglob("*")):
        if path.is_file():
            st = path.stat()
            h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def load_cached(kind: str, root: Path, cache: Path) -> dict[str, np.ndarray]:
    """Decode once into ``cache/cifar10-<fingerprint>.npz``; later runs memory-load it (no pickle, no re-decode)."""
    path = cache / f"cifar10-{_fingerprint(kind, root)}.npz"
    if path.is_file():
        try:
            with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:  # f: closed even if np.load fails
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a damaged cache is rebuilt, never trusted
            print(f"zoo: ignoring unreadable cache {path} ({err}); decoding again")
    arrays = read_pickles(root) if kind == "pickle" else read_image_folder(root)
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache behind
    return arrays


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Per-image random translation by up to ``padding`` pixels (reflect padding), batch-wise. x: (B, C, H, W)."""
    if padding <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode="reflect") if x.is_floating_point() else _pad_reflect_int(x, padding)
    dy = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device).view(1, h, 1)).expand(b, h, w)
    cols = (dx + torch.arange(w, device=x.device).view(1, 1, w)).expand(b, h, w)
    batch = torch.arange(b, device=x.device).view(b, 1, 1).expand(b, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def _pad_reflect_int(x: torch.Tensor, p: int) -> torch.Tensor:
    # F.pad's reflect mode has no integer kernel on CPU; index the reflected rows and columns instead.
    def reflect_index(n: int) -> torch.Tensor:
        i = torch.arange(-p, n + p, device=x.device).abs()
        return torch.where(i >= n, 2 * (n - 1) - i, i)

    return x[:, :, reflect_index(x.shape[2])][:, :, :, reflect_index(x.shape[3])]


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Flip each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def cutout(x: torch.Tensor, size: int) -> torch.Tensor:
    """Zero a random ``size`` x ``size`` square (clipped at the border) in each image."""
    b, _, h, w = x.shape
    cy = torch.randint(0, h, (b, 1, 1), device=x.device)
    cx = torch.randint(0, w, (b, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((ys - cy).abs() <= size // 2) & ((xs - cx).abs() <= size // 2)
    return x.masked_fill(inside.unsqueeze(1), 0)


class CIFAR10DataModule(TensorSplitLoaders, L.LightningDataModule):
    """CIFAR-10 with a held-out validation split, a uint8 in-memory cache and batch-wise augmentation on the device.

    Args:
        data_dir: where to look for (or download) CIFAR-10; default ``$ZOO_DATA_DIR``, else ``./data``.
        batch_size: images per batch (per process under DDP).
        val_size: images held out of the training split for validation (fixed ``seed``); 0 disables validation.
        seed: seed of the train/val split and of each epoch's training order (seed + epoch).
        crop_padding: random-translation range in pixels (reflect padding); 0 disables it.
        flip: horizontal flips: True flips each image at random every epoch; "alternate" flips a fixed random half
            of the training images and then all of them on every other epoch, so each image is seen both ways every
            two epochs (airbench's alternating flip, worth about one epoch of training there); False: none.
        cutout: side of the cutout square in pixels; 0 disables it.
        num_workers: DataLoader workers; batches are slices of an in-memory tensor, so 0 is usually fastest.
        download: fetch torchvision's copy in ``prepare_data`` when none is found.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        val_size: int = 5000,
        seed: int = 0,
        crop_padding: int = 4,
        flip: bool | Literal["alternate"] = True,
        cutout: int = 0,
        num_workers: int = 0,
        download: bool = True,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = resolve_data_dir(data_dir)
        self.num_classes = len(CLASSES)
        self.classes = CLASSES
        self.mean, self.std = MEAN, STD
        self.datasets: dict[str, TensorBatches] = {}

    def prepare_data(self) -> None:
        if find_cifar10(self.data_dir) is not None:
            return
        if self.hparams.download:
            try:
                from torchvision.datasets import CIFAR10

                CIFAR10(str(self.data_dir), train=True, download=True)
                return
            except Exception as err:  # offline, or the folder is read-only
                raise self._not_found(f"Downloading it into {self.data_dir} failed: {err}") from err
        raise self._not_found("download=False, so nothing was fetched.")

    def _not_found(self, why: str) -> CIFAR10NotFoundError:
        looked = "\n  ".join(_looked_at(self.data_dir))
        return CIFAR10NotFoundError(
            f"CIFAR-10 not found. Looked for:\n  {looked}\n{why}\n"
            "Fix: set --data.data_dir (or ZOO_DATA_DIR) to a folder holding 'cifar-10-batches-py/' or an ImageFolder "
            "copy 'train/<class>/*', 'test/<class>/*'; or run once with network access to download it "
            "(https://www.cs.toronto.edu/~kriz/cifar.html)."
        )

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        found = find_cifar10(self.data_dir)
        if found is None:
            raise self._not_found("Run prepare_data() (done by the Trainer) with download=True to fetch it.")
        arrays = load_cached(*found, cache_dir("datasets"))
        to_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))  # noqa: E731
        train_x, train_y = to_tensor(arrays["train_x"]), torch.from_numpy(arrays["train_y"])
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(self.hparams.seed))
        val_idx, train_idx = order[: self.hparams.val_size], order[self.hparams.val_size :]
        train_images = train_x[train_idx]
        if self.hparams.flip == "alternate":  # the fixed half that starts mirrored
            mirrored = torch.rand(len(train_idx), generator=torch.Generator().manual_seed(self.hparams.seed + 1)) < 0.5
            train_images[mirrored] = train_images[mirrored].flip(3)
        self.datasets = {
            "train": TensorBatches(train_images, train_y[train_idx]),
            "val": TensorBatches(train_x[val_idx], train_y[val_idx]),
            "test": TensorBatches(to_tensor(arrays["test_x"]), torch.from_numpy(arrays["test_y"])),
        }

    def card_info(self) -> dict:
        """What a model card records about this data: dataset, splits, licence and the model's preprocessing."""
        h = self.hparams
        return {
            "dataset": "CIFAR-10",
            "classes": list(CLASSES),
            "train_split": f"train minus {h.val_size} images held out for validation (seed {h.seed})",
            "test_split": "test (the official 10,000 images)",
            "licence": CIFAR10_LICENCE,
            "preprocessing": {
                "image_size": [32, 32],
                "input": "RGB, (B, 3, 32, 32) float = (uint8 / 255 - mean) / std",
                "mean": list(MEAN),
                "std": list(STD),
            },
        }

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Augment (training only) and normalise on whatever device the batch now lives on."""
        if not isinstance(batch, (tuple, list)):  # e.g. the model's example_input_array, already a float input
            return batch
        x, y = batch
        if self.trainer is not None and self.trainer.training:
            x = random_crop(x, self.hparams.crop_padding)
            if self.hparams.flip == "alternate":
                if self.trainer.current_epoch % 2 == 1:
                    x = x.flip(3)
            elif self.hparams.flip:
                x = random_flip(x)
            if self.hparams.cutout > 0:
                x = cutout(x, self.hparams.cutout)
        return self.normalize(x), y

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) in [0, 255] -> float, standardised with the CIFAR-10 mean and std."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1) * 255
        return (x.float() - mean) / std
