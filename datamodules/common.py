"""What the DataModules share: where data and caches live (``ZOO_DATA_DIR`` / ``ZOO_CACHE``, with plain defaults),
the licences of known datasets, and in-memory loaders that serve whole batches of uint8 tensors."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, Sampler


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


class EpochSampler(Sampler[int]):
    """Indices ``0..n-1``, shuffled with a generator seeded by ``seed + epoch`` (Lightning calls ``set_epoch``), so
    the order of an epoch does not depend on what consumed random numbers before it, e.g. a resumed run."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True):
        self.n, self.seed, self.shuffle, self.epoch = n, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        if not self.shuffle:
            return iter(range(self.n))
        return iter(torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist())

    def __len__(self) -> int:
        return self.n


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning checkpoints (``state_dict``: the batches served in this epoch) and that, restored
    from a checkpoint taken mid-epoch, skips the batches the run had already trained on. With an ``EpochSampler``
    (or Lightning's DistributedSampler) the skipped batches are the very same ones."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._served, self._skip = 0, 0

    def __iter__(self):
        skip, self._skip, self._served = self._skip, 0, 0
        for i, batch in enumerate(super().__iter__()):
            self._served = i + 1
            if i >= skip:
                yield batch

    def state_dict(self) -> dict:
        state = {"batches_served": self._served}
        if hasattr(self.dataset, "state_dict"):  # e.g. a stream's random offset for this pass
            state["dataset"] = self.dataset.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self._skip = int(state.get("batches_served", 0))
        if "dataset" in state and hasattr(self.dataset, "load_state_dict"):
            self.dataset.load_state_dict(state["dataset"])


class TensorSplitLoaders:
    """DataLoaders over ``self.datasets`` (``TensorBatches`` per split), for DataModules whose hparams have
    ``batch_size``, ``num_workers``, ``seed`` and ``val_size``; predict runs on the test split. The training order is
    seeded per epoch and resumable mid-epoch (``EpochSampler``, ``ResumableLoader``)."""

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        data = self.datasets[split]
        return ResumableLoader(
            data,
            batch_size=self.hparams.batch_size,
            sampler=EpochSampler(len(data), seed=self.hparams.seed, shuffle=shuffle),
            # Its own generator: iterating would otherwise draw a seed from the global RNG, which the model's dropout
            # and the batch augmentation share, so a resumed run (which starts new iterators) would drift.
            generator=torch.Generator().manual_seed(self.hparams.seed),
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
