"""What the DataModules share: where data and caches live (``ZOO_DATA_DIR`` / ``ZOO_CACHE``, with plain defaults),
the licences of known datasets, and in-memory loaders that serve whole batches of uint8 tensors."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler


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


def file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_cache(path: Path, **arrays: np.ndarray) -> None:
    """Save ``arrays`` to ``path`` (.npz) atomically, then its sha256 to ``<path>.sha256``: a cache without a
    matching checksum (damaged, or its writer killed) is never read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    path.with_name(path.name + ".sha256").write_text(file_sha256(path))


def read_cache(path: Path) -> dict[str, np.ndarray] | None:
    """The arrays ``write_cache`` saved, or None when there are none or they fail their checksum (said in one
    line: the caller rebuilds them)."""
    digest = path.with_name(path.name + ".sha256")
    if not path.is_file():
        return None
    if not digest.is_file() or file_sha256(path) != digest.read_text().strip():
        print(f"zoo: cache {path} does not match its checksum; building it again")
        return None
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


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


class EpochSampler(DistributedSampler):
    """Indices ``0..n-1``, shuffled with a generator seeded by ``seed + epoch`` (Lightning calls ``set_epoch``), so
    the order of an epoch does not depend on what consumed random numbers before it, e.g. a resumed run.

    Under DDP (a process group is up when Lightning asks for the loaders) each of the N processes takes every N-th
    index of that order, torch's DistributedSampler dealing: together they see in each step the very batch one
    process at N times the batch size would, so Lightning keeps this sampler instead of wrapping it in its own
    reshuffling one."""

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True, num_replicas: int | None = None,
                 rank: int | None = None):
        distributed = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else dist.get_world_size() if distributed else 1
        rank = rank if rank is not None else dist.get_rank() if distributed else 0
        super().__init__(range(n), num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.n = n


class ResumableLoader(DataLoader):
    """A DataLoader that Lightning checkpoints (``state_dict``: the epoch and the batches served in it) and that,
    restored from a checkpoint taken mid-epoch, skips the batches the run had already trained on in that epoch. With
    an ``EpochSampler`` (or Lightning's DistributedSampler) the skipped batches are the very same ones.

    The epoch is read from the sampler's or the dataset's ``epoch``; a checkpoint taken after an epoch's last batch
    (during its validation) resumes into the next epoch, which must not skip anything."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._served, self._skip, self._epoch, self._skip_epoch = 0, 0, None, None

    def _current_epoch(self) -> int | None:
        for source in (self.sampler, self.dataset):
            epoch = getattr(source, "epoch", None)
            if isinstance(epoch, int):
                return epoch
        return None

    def __iter__(self):
        self._epoch, self._served = self._current_epoch(), 0
        skip = self._skip if self._skip_epoch is None or self._skip_epoch == self._epoch else 0
        self._skip, self._skip_epoch = 0, None
        for i, batch in enumerate(super().__iter__()):
            self._served = i + 1
            if i >= skip:
                yield batch

    def state_dict(self) -> dict:
        return {"batches_served": self._served, "epoch": self._epoch}

    def load_state_dict(self, state: dict) -> None:
        self._skip, self._skip_epoch = int(state.get("batches_served", 0)), state.get("epoch")


class TensorSplitLoaders:
    """DataLoaders over ``self.datasets`` (``TensorBatches`` per split), for DataModules whose hparams have
    ``batch_size``, ``num_workers``, ``seed`` and ``val_size``; predict runs on the test split. The training order is
    seeded per epoch and resumable mid-epoch (``EpochSampler``, ``ResumableLoader``)."""

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader:
        data = self.datasets[split]
        return ResumableLoader(
            data,
            batch_size=self.hparams.batch_size,
            sampler=self.train_sampler(len(data)) if shuffle else EpochSampler(len(data), shuffle=False),
            # Its own generator: iterating would otherwise draw a seed from the global RNG, which the model's dropout
            # and the batch augmentation share, so a resumed run (which starts new iterators) would drift.
            generator=torch.Generator().manual_seed(self.hparams.seed),
            drop_last=shuffle,
            collate_fn=keep_batch,
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_sampler(self, n: int) -> Sampler[int]:
        """The training order over ``n`` items; a DataModule overrides it, e.g. to balance classes (sampling.py)."""
        return EpochSampler(n, seed=self.hparams.seed)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val") if self.hparams.val_size > 0 else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test")
