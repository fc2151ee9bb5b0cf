"""MNIST and Fashion-MNIST as LightningDataModules: 28 x 28 grey images kept as uint8, scaled on the device.

Usage:
    dm = MNISTDataModule(data_dir="data")                                    # [0, 1], 28 px (the VAE)
    dm = FashionMNISTDataModule(image_size=32, value_range="-1,1")           # [-1, 1], padded to 32 px (the DCGAN)
    dm = FashionMNISTDataModule(sampling="oversample", augment_policy="trivialaugment")       # a classifier's
    # zoo fit --config configs/vae_mnist.yaml --data.data_dir /path/to/data

The on-disk format is torchvision's: ``<data_dir>/MNIST/raw/`` or ``<data_dir>/FashionMNIST/raw/`` holding the four
idx files (``train-images-idx3-ubyte`` ...), uncompressed or as ``.gz``. Uncompressed files are read in place (the
folder may be read-only); ``.gz``-only copies are decompressed once into ``$ZOO_CACHE/datasets``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F

from zoo.errors import UserError
from zoo.datamodules.augment import augment_batch
from zoo.datamodules.common import TensorBatches, TensorSplitLoaders, cache_dir, file_sha256, resolve_data_dir
from zoo.datamodules.sampling import BalancedSampler, Sampling, class_counts, generator_for

RAW_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
AUGMENT_STREAM = 3  # the augmentation's random stream: generator_for(seed, AUGMENT_STREAM, rank, epoch, batch)
# AutoAugment has no learned policy for grey digits or clothes, so it is not offered here.
MNISTPolicy = Literal["none", "randaugment", "trivialaugment", "augmix"]
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")


class MNISTNotFoundError(UserError, FileNotFoundError):
    pass


def find_raw(data_dir: Path, name: str) -> Path | None:
    """``data_dir/<name>/raw`` if it holds all four idx files (each uncompressed or ``.gz``), else None."""
    raw = data_dir / name / "raw"
    ok = all((raw / f).is_file() or (raw / f"{f}.gz").is_file() for f in RAW_FILES)
    return raw if ok else None


def readable_root(raw: Path, name: str) -> Path:
    """A root that torchvision's dataset class can read without downloading: ``raw``'s grand-parent when the idx
    files are there uncompressed, else a cache folder into which the ``.gz`` files are decompressed once."""
    if all((raw / f).is_file() for f in RAW_FILES):
        return raw.parent.parent
    h = hashlib.sha256(str(raw.resolve()).encode())
    for f in RAW_FILES:
        src = raw / f if (raw / f).is_file() else raw / f"{f}.gz"
        st = src.stat()
        h.update(f"{src.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    root = cache_dir("datasets", f"{name.lower()}-{h.hexdigest()[:16]}")
    out = root / name / "raw"
    out.mkdir(parents=True, exist_ok=True)
    for f in RAW_FILES:
        digest = out / f"{f}.sha256"  # written after the file: a damaged or unfinished copy is noticed, redone
        if (out / f).is_file() and digest.is_file() and file_sha256(out / f) == digest.read_text().strip():
            continue
        if (out / f).is_file():
            print(f"zoo: cache {out / f} does not match its checksum; decompressing it again")
        src = raw / f
        tmp = out / f"{f}.{os.getpid()}.tmp"
        if src.is_file():
            shutil.copyfile(src, tmp)
        else:
            with gzip.open(raw / f"{f}.gz", "rb") as zin, open(tmp, "wb") as zout:
                shutil.copyfileobj(zin, zout)
        os.replace(tmp, out / f)  # atomic: a killed run never leaves a half-written file behind
        digest.write_text(file_sha256(out / f))
    return root


def to_range(x: torch.Tensor, image_size: int, resize: str, value_range: str, binarize: str) -> torch.Tensor:
    """uint8 (B, 28, 28) -> float (B, 1, image_size, image_size) in [0, 1] or [-1, 1].

    ``resize``: "pad" adds black borders (28 -> 32 keeps every pixel), "bilinear" interpolates (e.g. 28 -> 64).
    ``binarize``: "threshold" (> 0.5), "bernoulli" (each pixel ~ Bernoulli(intensity), resampled every call) or "none".
    """
    x = x.unsqueeze(1).float() / 255  # (B, 1, 28, 28)
    size = x.shape[-1]
    if image_size != size:
        if resize == "pad":
            if image_size < size or (image_size - size) % 2:
                raise ValueError(f"resize='pad' needs an even image_size >= {size}; got {image_size}.")
            x = F.pad(x, (((image_size - size) // 2),) * 4)
        else:
            x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False)
            x = x.clamp(0, 1)
    if binarize == "threshold":  # after resizing, so the model sees binary pixels at any size
        x = (x > 0.5).float()
    elif binarize == "bernoulli":
        x = torch.bernoulli(x)
    return x * 2 - 1 if value_range == "-1,1" else x


class MNISTDataModule(TensorSplitLoaders, L.LightningDataModule):
    """MNIST digits (torchvision's format) with a held-out validation split, optional resize and value range.

    Batches are ``(images, labels)``: images float (B, 1, image_size, image_size), labels int64 (B,).

    Args:
        data_dir: folder holding ``MNIST/raw/``; default ``$ZOO_DATA_DIR``, else ``./data``.
        batch_size: images per batch (per process under DDP).
        val_size: images held out of the training split for validation (fixed ``seed``); 0 disables validation.
        seed: seed of the train/val split and of each epoch's training order (seed + epoch).
        image_size: output side in pixels (28 keeps the originals; 32 or 64 for the DCGAN).
        resize: how to reach ``image_size``: "pad" (black border) or "bilinear".
        value_range: "0,1" (Bernoulli likelihoods, sigmoid outputs) or "-1,1" (tanh outputs).
        binarize: "none", "threshold" (fixed binarisation) or "bernoulli" (dynamic binarisation: a new draw each
            time a batch is served, validation and test included).
        num_workers: DataLoader workers; batches are slices of an in-memory tensor, so 0 is usually fastest.
        download: fetch torchvision's copy in ``prepare_data`` when none is found.
        sampling: training order: "none" (each image once an epoch), "oversample" (classes equally often, epoch of
            the training-set size) or "undersample" (min class count per class, a shorter epoch); seeded per epoch.
        augment_policy: "randaugment", "trivialaugment" or "augmix" on the 28 px uint8 training batches (before
            resizing), drawn per image from a generator seeded by (seed, rank, epoch, batch index); "none": off.
    """

    dataset_name = "MNIST"  # torchvision's class name, and the folder under data_dir
    classes = tuple(str(i) for i in range(10))
    url = "http://yann.lecun.com/exdb/mnist/"
    licence = "MNIST (LeCun, Cortes & Burges): commonly cited as CC BY-SA 3.0"

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 128,
        val_size: int = 5000,
        seed: int = 0,
        image_size: int = 28,
        resize: Literal["pad", "bilinear"] = "pad",
        value_range: Literal["0,1", "-1,1"] = "0,1",
        binarize: Literal["none", "threshold", "bernoulli"] = "none",
        num_workers: int = 0,
        download: bool = True,
        sampling: Sampling = "none",
        augment_policy: MNISTPolicy = "none",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = resolve_data_dir(data_dir)
        self.num_classes = len(self.classes)
        self.dims = (1, image_size, image_size)
        self.datasets: dict[str, TensorBatches] = {}

    def _torchvision_class(self):
        import torchvision.datasets

        return getattr(torchvision.datasets, self.dataset_name)

    def prepare_data(self) -> None:
        if find_raw(self.data_dir, self.dataset_name) is not None:
            return
        if not self.hparams.download:
            raise self._not_found("download=False, so nothing was fetched.")
        try:
            self._torchvision_class()(str(self.data_dir), train=True, download=True)
        except Exception as err:  # offline, or the folder is read-only
            raise self._not_found(f"Downloading it into {self.data_dir} failed: {err}") from err

    def _not_found(self, why: str) -> MNISTNotFoundError:
        raw = self.data_dir / self.dataset_name / "raw"
        looked = "\n  ".join(str(raw / f) + "[.gz]" for f in RAW_FILES)
        return MNISTNotFoundError(
            f"{self.dataset_name} not found. Looked for:\n  {looked}\n{why}\n"
            f"Fix: set --data.data_dir (or ZOO_DATA_DIR) to a folder holding '{self.dataset_name}/raw/' with the four "
            f"idx files, or run once with network access to download them ({self.url})."
        )

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        raw = find_raw(self.data_dir, self.dataset_name)
        if raw is None:
            raise self._not_found("Run prepare_data() (done by the Trainer) with download=True to fetch it.")
        root = str(readable_root(raw, self.dataset_name))
        cls = self._torchvision_class()
        train, test = cls(root, train=True, download=False), cls(root, train=False, download=False)
        order = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(self.hparams.seed))
        val_idx, train_idx = order[: self.hparams.val_size], order[self.hparams.val_size :]
        self.datasets = {
            "train": TensorBatches(train.data[train_idx], train.targets[train_idx]),
            "val": TensorBatches(train.data[val_idx], train.targets[val_idx]),
            "test": TensorBatches(test.data, test.targets),
        }

    def class_counts(self) -> torch.Tensor:
        """Training images per class, int64 (10,), in the split trained on (e.g. for class-weighted losses)."""
        self.setup()
        return class_counts(self.datasets["train"].labels, self.num_classes)

    def train_sampler(self, n: int):
        """EpochSampler, or a BalancedSampler over the training labels when ``sampling`` asks for one."""
        if self.hparams.sampling == "none":
            return super().train_sampler(n)
        return BalancedSampler(self.datasets["train"].labels, self.hparams.sampling, seed=self.hparams.seed,
                               num_classes=self.num_classes)

    def card_info(self) -> dict:
        """What a model card records about this data: dataset, splits, licence and the model's input."""
        h = self.hparams
        scaling = "x / 255" if h.value_range == "0,1" else "x / 255 * 2 - 1"
        train = f"train minus {h.val_size} images held out for validation (seed {h.seed})"
        if h.sampling != "none":
            train += f"; {h.sampling}d to balance the classes"
        if h.augment_policy != "none":
            train += f"; {h.augment_policy} augmentation"
        return {
            "dataset": self.dataset_name,
            "classes": list(self.classes),
            "train_split": train,
            "test_split": "test (the official 10,000 images)",
            "licence": self.licence,
            "preprocessing": {
                "image_size": [h.image_size, h.image_size],
                "input": f"grey, (B, 1, {h.image_size}, {h.image_size}) float = {scaling} ({h.resize} from 28 px"
                         f"{', binarised: ' + h.binarize if h.binarize != 'none' else ''})",
            },
        }

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        """Scale (and resize, binarise) on whatever device the batch now lives on."""
        if not isinstance(batch, (tuple, list)):  # e.g. the model's example_input_array, already a float input
            return batch
        x, y = batch
        h = self.hparams
        t = self.trainer
        if h.augment_policy != "none" and t is not None and t.training:
            # The loop has not counted this batch yet: `ready` is its index in the epoch (restored on resume).
            key = (t.global_rank, t.current_epoch, t.fit_loop.epoch_loop.batch_progress.current.ready)
            x = augment_batch(x.unsqueeze(1), h.augment_policy, generator_for(h.seed, AUGMENT_STREAM, *key))[:, 0]
        return to_range(x, h.image_size, h.resize, h.value_range, h.binarize), y


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Zalando): ten clothing classes in MNIST's format; same arguments as MNISTDataModule."""

    dataset_name = "FashionMNIST"
    classes = FASHION_CLASSES
    url = "https://github.com/zalandoresearch/fashion-mnist"
    licence = "Fashion-MNIST (Xiao, Rasul & Vollgraf, Zalando Research, 2017): MIT"
