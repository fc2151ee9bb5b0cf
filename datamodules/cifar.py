"""CIFAR-10 as a LightningDataModule, decoded once into a uint8 cache and augmented batch-wise on the device.

Usage:
    dm = CIFAR10DataModule(data_dir="data", batch_size=512)
    # zoo fit --config configs/cifar_resnet.yaml --data.data_dir /path/to/data
    dm = CIFAR10DataModule(imbalance_ratio=100, sampling="oversample", augment_policy="randaugment")

Two on-disk formats are read, found automatically under ``data_dir``:
  * torchvision's ``cifar-10-batches-py/`` pickles (downloaded in ``prepare_data`` when online);
  * an ImageFolder layout ``train/<class>/*``, ``test/<class>/*`` (JPEG/PNG copies, e.g. Kaggle's), either directly
    in ``data_dir`` or in one of its sub-folders ``cifar10``, ``cifar10-jpg``, ``cifar10-png``, ``CIFAR10``.
"""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path
from typing import Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from zoo.errors import UserError
from zoo.datamodules.augment import Policy, augment_batch
from zoo.datamodules.common import (CIFAR10_LICENCE, TensorBatches, TensorSplitLoaders, cache_dir, read_cache,
                                    resolve_data_dir, write_cache)
from zoo.datamodules.pseudo_labels import read_pseudo_labels
from zoo.datamodules.sampling import (BalancedSampler, Sampling, balanced_quotas, class_counts, generator_for,
                                      long_tail_quotas, subset_per_class)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
IMAGE_FOLDER_NAMES = ("", "cifar10", "cifar10-jpg", "cifar10-png", "CIFAR10")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
PICKLE_DIR = "cifar-10-batches-py"
# Independent random streams derived from ``seed`` (generator_for(seed, stream, ...)).
LONG_TAIL_STREAM, LABELLED_STREAM, AUGMENT_STREAM = 1, 2, 3


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
    """Decode once into ``cache/cifar10-<fingerprint>.npz``; later runs memory-load it (no pickle, no re-decode)
    after checking its sha256 (a damaged cache is decoded again, never used)."""
    path = cache / f"cifar10-{_fingerprint(kind, root)}.npz"
    arrays = read_cache(path)
    if arrays is None:
        arrays = read_pickles(root) if kind == "pickle" else read_image_folder(root)
        write_cache(path, **arrays)
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
        sampling: training order: "none" (each image once an epoch), "oversample" (classes equally often, epoch of
            the training-set size) or "undersample" (min class count per class, a shorter epoch); seeded per epoch.
        imbalance_ratio: > 1 makes the training split long-tailed (Cui et al., 2019): class i keeps
            ``int(n_max * ratio ** (-i / 9))`` images picked with ``seed`` (airplane the head, truck the tail;
            5000 ... 50 at 100 with val_size 0). Applied after the validation split, so val and test stay as they are.
        augment_policy: "randaugment", "trivialaugment", "autoaugment" (CIFAR-10 policy) or "augmix", drawn per
            image after crop and flip (datamodules/augment.py), from a generator seeded by (seed, rank, epoch,
            batch index), so a resumed run replays it; "none": off.
        labelled: > 0 keeps a class-balanced seeded subset of that many labelled training images (after
            ``imbalance_ratio``); the rest of the training split is the unlabelled pool (``unlabelled_dataloader``).
        pseudo_labels: a teacher's labels for (part of) the unlabelled pool, trained on beside the labelled images;
            needs ``labelled``. A safetensors file holding ``indices`` int64 (M,): positions in the decoded training
            array (``train_x``: the official order for the pickles, sorted class folders then file names for an
            ImageFolder copy; exactly what ``unlabelled_dataloader`` yields) and ``probs`` float (M, 10): class
            probabilities. Every index must be in this DataModule's unlabelled pool (same data, ``seed``,
            ``val_size``, ``imbalance_ratio`` and ``labelled``), which keeps validation images out. Training targets
            are then float (B, 10): one-hot for labelled images, ``probs`` for pseudo-labelled ones.
        pseudo_hard: use one-hot ``argmax(probs)`` instead of the probabilities.
        pseudo_threshold: drop pseudo-labels whose largest probability is below it.
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
        sampling: Sampling = "none",
        imbalance_ratio: float = 1.0,
        augment_policy: Policy = "none",
        labelled: int = 0,
        pseudo_labels: str | None = None,
        pseudo_hard: bool = False,
        pseudo_threshold: float = 0.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        if imbalance_ratio < 1:
            raise ValueError(f"imbalance_ratio must be >= 1 (head count / tail count); got {imbalance_ratio}.")
        if pseudo_labels and labelled <= 0:
            raise ValueError("pseudo_labels needs labelled > 0: the teacher labels the images outside the labelled "
                             "subset (the unlabelled pool), and with labelled=0 every training image is labelled.")
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
        h = self.hparams
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(h.seed))
        val_idx, train_idx = order[: h.val_size], order[h.val_size :]
        if h.imbalance_ratio != 1:  # after the val split: val keeps its (random, near-balanced) draw
            quotas = long_tail_quotas(class_counts(train_y[train_idx], self.num_classes), h.imbalance_ratio)
            train_idx = train_idx[subset_per_class(train_y[train_idx], quotas, generator_for(h.seed, LONG_TAIL_STREAM))]
        train_targets = train_y[train_idx]
        datasets = {}
        if h.labelled > 0:
            pool = train_idx
            quotas = balanced_quotas(class_counts(train_targets, self.num_classes), h.labelled)
            train_idx = pool[subset_per_class(train_targets, quotas, generator_for(h.seed, LABELLED_STREAM))]
            unlabelled = pool[~torch.isin(pool, train_idx)].sort().values  # in index order, for the teacher
            datasets["unlabelled"] = TensorBatches(train_x[unlabelled], unlabelled)
            train_targets = train_y[train_idx]
            if h.pseudo_labels:
                settings = f"seed={h.seed}, val_size={h.val_size}, imbalance_ratio={h.imbalance_ratio}, labelled={h.labelled}"
                pseudo_idx, probs = read_pseudo_labels(h.pseudo_labels, unlabelled, self.num_classes,
                                                       h.pseudo_threshold, h.pseudo_hard, settings)
                train_idx = torch.cat([train_idx, pseudo_idx])
                train_targets = torch.cat([F.one_hot(train_targets, self.num_classes).float(), probs])
        train_images = train_x[train_idx]
        if h.flip == "alternate":  # the fixed half that starts mirrored
            mirrored = torch.rand(len(train_idx), generator=torch.Generator().manual_seed(h.seed + 1)) < 0.5
            train_images[mirrored] = train_images[mirrored].flip(3)
        self.datasets = datasets | {
            "train": TensorBatches(train_images, train_targets),
            "val": TensorBatches(train_x[val_idx], train_y[val_idx]),
            "test": TensorBatches(to_tensor(arrays["test_x"]), torch.from_numpy(arrays["test_y"])),
        }

    def class_counts(self) -> torch.Tensor:
        """Training images per class, int64 (10,), in the split actually trained on (after ``imbalance_ratio`` and
        ``labelled``; pseudo-labelled images count for their most probable class), e.g. for class-weighted losses."""
        self.setup()
        labels = self.datasets["train"].labels
        return class_counts(labels if labels.ndim == 1 else labels.argmax(1), self.num_classes)

    def train_sampler(self, n: int):
        """EpochSampler, or a BalancedSampler over the training labels when ``sampling`` asks for one."""
        if self.hparams.sampling == "none":
            return super().train_sampler(n)
        labels = self.datasets["train"].labels
        labels = labels if labels.ndim == 1 else labels.argmax(1)
        return BalancedSampler(labels, self.hparams.sampling, seed=self.hparams.seed, num_classes=self.num_classes)

    def unlabelled_dataloader(self) -> DataLoader:
        """The unlabelled pool (``labelled`` > 0), in index order, as ``(images, indices)``: images normalised as for
        prediction, float (B, 3, 32, 32) on the CPU; indices int64 (B,), positions in the decoded training array.
        ``zoo pseudo-label TEACHER`` labels it (datamodules/pseudo_labels.py)."""
        self.setup()
        if "unlabelled" not in self.datasets:
            raise ValueError("unlabelled_dataloader() needs labelled > 0 (with labelled=0 every image is labelled).")
        return DataLoader(self.datasets["unlabelled"], batch_size=self.hparams.batch_size,
                          collate_fn=self._normalised, num_workers=self.hparams.num_workers)

    def _normalised(self, batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.normalize(batch[0]), batch[1]

    def card_info(self) -> dict:
        """What a model card records about this data: dataset, splits, licence and the model's preprocessing."""
        h = self.hparams
        train = (f"train minus {h.val_size} images held out for validation (seed {h.seed})" if h.val_size else
                 "train (all 50,000 images; no validation split)")
        if h.imbalance_ratio != 1:
            train += (f"; long-tailed with imbalance ratio {h.imbalance_ratio:g} (Cui et al. 2019: class i keeps "
                      f"int(n_max * {h.imbalance_ratio:g} ** (-i / 9)) images)")
        if h.labelled > 0:
            train += f"; {h.labelled} labelled images (class-balanced)"
            if h.pseudo_labels:
                train += (f" plus {'hard' if h.pseudo_hard else 'soft'} pseudo-labels from {Path(h.pseudo_labels).name}"
                          f" (threshold {h.pseudo_threshold:g})")
        if h.sampling != "none":
            train += f"; {h.sampling}d to balance the classes"
        if h.augment_policy != "none":
            train += f"; {h.augment_policy} augmentation"
        return {
            "dataset": "CIFAR-10",
            "classes": list(CLASSES),
            "train_split": train,
            **({"imbalance_ratio": h.imbalance_ratio} if h.imbalance_ratio != 1 else {}),
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
        if x.dtype != torch.uint8:  # already normalised (e.g. unlabelled_dataloader's batches)
            return batch
        if self.trainer is not None and self.trainer.training:
            x = random_crop(x, self.hparams.crop_padding)
            if self.hparams.flip == "alternate":
                if self.trainer.current_epoch % 2 == 1:
                    x = x.flip(3)
            elif self.hparams.flip:
                x = random_flip(x)
            if self.hparams.augment_policy != "none":
                x = augment_batch(x, self.hparams.augment_policy, self._batch_generator(), "cifar10")
            if self.hparams.cutout > 0:
                x = cutout(x, self.hparams.cutout)
        return self.normalize(x), y

    def _batch_generator(self) -> torch.Generator:
        """A generator seeded by (seed, rank, epoch, index of this batch in the epoch): the same batch gets the same
        draws in a resumed run, whatever else consumed random numbers before it."""
        t = self.trainer
        # In on_after_batch_transfer the loop has not counted this batch yet: `ready` is its index (Lightning's
        # training_epoch_loop.advance passes batch_idx = ready to training_step), restored on a mid-epoch resume.
        batch_idx = t.fit_loop.epoch_loop.batch_progress.current.ready
        return generator_for(self.hparams.seed, AUGMENT_STREAM, t.global_rank, t.current_epoch, batch_idx)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) in [0, 255] -> float, standardised with the CIFAR-10 mean and std."""
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1) * 255
        return (x.float() - mean) / std
