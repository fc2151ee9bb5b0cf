"""What the DataModules share: where data and caches live (``ZOO_DATA_DIR`` / ``ZOO_CACHE``, with plain defaults),
the licences of known datasets, and in-memory loaders that serve whole batches of uint8 tensors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset


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


class TensorBatches(Dataset):
    """Images (N, 3, H, W) uint8 and labels (N,) served a whole batch per fetch (``__getitems__``), no per-item collate."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return self.images[idx], self.labels[idx]


def keep_batch(batch):
    """collate_fn for TensorBatches: the batch is already stacked."""
    return batch


class TensorSplitLoaders:
    """DataLoaders over ``self.datasets`` (``TensorBatches`` per split), for DataModules whose hparams have
    ``batch_size``, ``num_workers`` and ``val_size``; predict runs on the test split."""

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.hparams.batch_size,
            shuffle=shuffle,
            drop_last=shuffle,
            collate_fn=keep_batch,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if self.hparams.val_size > 0 else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
