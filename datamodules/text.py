"""Character-level text corpora as a LightningDataModule, served as contiguous streams for truncated BPTT.

Usage:
    dm = CharTextDataModule("tinyshakespeare/input.txt", batch_size=64, seq_len=256)
    # zoo fit --config configs/lstm_tinyshakespeare.yaml

Any UTF-8 text file works. It is split contiguously into train/val/test (90/5/5 by default). The vocabulary is the
sorted set of characters of the training split (``dm.vocab``, a plain string); the model keeps it in its
hyperparameters, so a checkpoint encodes and decodes without the corpus.

Each split is cut into ``batch_size`` contiguous streams laid side by side: batch ``i`` holds characters
``[i * seq_len, (i + 1) * seq_len)`` of every stream, so row ``b`` of batch ``i + 1`` continues row ``b`` of batch
``i`` and a recurrent model can carry its hidden state from one batch to the next. The last batch of a split may be
shorter in time, so every character of a split is scored.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from zoo.errors import UserError
from zoo.datamodules.common import ResumableLoader, known_licence, resolve_data_dir

# How to fetch corpora the configs name, keyed by file name.
FETCH = {
    "input.txt": "curl -L --create-dirs -o DATA_DIR/tinyshakespeare/input.txt "
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
}


def build_vocab(text: str) -> str:
    """The sorted distinct characters of ``text``; character ``vocab[i]`` has id ``i``."""
    return "".join(sorted(set(text)))


def encode(text: str, vocab: str) -> torch.Tensor:
    """Character ids (len(text),) int64; raises on a character outside ``vocab``."""
    index = {c: i for i, c in enumerate(vocab)}
    unknown = set(text) - index.keys()
    if unknown:
        raise ValueError(f"Characters {sorted(unknown)!r} are not in the vocabulary of {len(vocab)} characters.")
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def decode(ids: torch.Tensor | list[int], vocab: str) -> str:
    """Inverse of ``encode``."""
    return "".join(vocab[i] for i in torch.as_tensor(ids).tolist())


def split_text(text: str, fractions: tuple[float, float, float]) -> tuple[str, str, str]:
    """Contiguous train/val/test parts of ``text`` in the given proportions (train first, test last)."""
    n = len(text)
    a = int(n * fractions[0] / sum(fractions))
    b = a + int(n * fractions[1] / sum(fractions))
    return text[:a], text[a:b], text[b:]


def as_streams(ids: torch.Tensor, streams: int) -> torch.Tensor:
    """(N,) -> (streams, N // streams): row ``b`` is the ``b``-th contiguous piece; the < ``streams`` tail is dropped."""
    length = len(ids) // streams
    if length < 2:
        raise ValueError(f"{len(ids)} characters are too few for {streams} streams of at least 2 characters.")
    return ids[: streams * length].view(streams, length)


class StreamBatches(IterableDataset):
    """Batches ``(x, y)`` of shape (streams, <= seq_len) walking along ``streams`` (S, L) in time; ``y`` is ``x``
    shifted by one character. With ``random_offset`` each pass starts at a random offset below ``seq_len``, so the
    truncation points move from epoch to epoch (training only).

    The offset of a pass is drawn from a generator seeded with ``seed + epoch``, ``epoch`` being what ``epoch()``
    returns (the trainer's current epoch; without it, the number of passes so far), so it depends on nothing that
    ran before: a run resumed in any epoch, or at an epoch's end, replays the very same truncation points."""

    def __init__(self, streams: torch.Tensor, seq_len: int, random_offset: bool = False, seed: int = 0,
                 epoch: Callable[[], int] | None = None):
        self.streams, self.seq_len, self.random_offset, self.seed = streams, seq_len, random_offset, seed
        self._epoch_of, self._passes = epoch, 0

    @property
    def epoch(self) -> int:
        """The epoch of the next pass."""
        return self._epoch_of() if self._epoch_of is not None else self._passes

    def __len__(self) -> int:
        return math.ceil((self.streams.shape[1] - 1) / self.seq_len)

    def __iter__(self):
        epoch = self.epoch
        self._passes += 1
        generator = torch.Generator().manual_seed(self.seed + epoch)
        start = int(torch.randint(self.seq_len, (), generator=generator)) if self.random_offset else 0
        last = self.streams.shape[1] - 1  # the last character is only ever a target
        for i in range(start, last, self.seq_len):
            j = min(i + self.seq_len, last)
            yield self.streams[:, i:j], self.streams[:, i + 1 : j + 1]


class TextNotFoundError(UserError, FileNotFoundError):
    """The corpus is not where the DataModule looked; the message names the file and the fix."""


class CharTextDataModule(L.LightningDataModule):
    """A UTF-8 text file as character streams for a recurrent language model; also serves prompts to ``predict``.

    Args:
        path: the text file; relative paths are taken under ``data_dir``.
        data_dir: root for relative ``path``; default ``$ZOO_DATA_DIR``, else ``./data``.
        batch_size: parallel streams per batch (per process under DDP).
        seq_len: characters per batch and stream, i.e. the truncated-BPTT length.
        split: train/val/test proportions of the file, taken contiguously in this order.
        random_offset: shift the training truncation points by a random amount each epoch.
        seed: seed of those offsets (``seed + epoch`` each epoch, whatever ran before).
        prompts: texts that ``zoo predict`` continues, one prediction per prompt.
        sample_length: characters generated per prompt.
        temperature: sampling temperature (0 = greedy).
        top_k: sample among the ``top_k`` most likely characters only (0 = all).
    """

    def __init__(
        self,
        path: str,
        data_dir: str | None = None,
        batch_size: int = 64,
        seq_len: int = 256,
        split: tuple[float, float, float] = (0.9, 0.05, 0.05),
        random_offset: bool = True,
        seed: int = 0,
        prompts: list[str] = ["\n"],  # noqa: B006 - read-only; jsonargparse needs a literal default
        sample_length: int = 500,
        temperature: float = 0.8,
        top_k: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.file = Path(path) if Path(path).is_absolute() else resolve_data_dir(data_dir) / path
        self.vocab: str | None = None
        self.streams: dict[str, torch.Tensor] = {}

    def _not_found(self) -> FileNotFoundError:
        fetch = FETCH.get(self.file.name, "put the UTF-8 text file there").replace("DATA_DIR", str(self.file.parents[1]))
        return TextNotFoundError(
            f"No text corpus at {self.file}. Fix: point ZOO_DATA_DIR at the folder holding {self.hparams.path} "
            f"(zoo evaluate: --data-dir; zoo fit: --data.data_dir, or --data.path for another file), or fetch it: "
            f"{fetch}"
        )

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict" or self.streams:
            return  # prompts need no corpus; the model brings its vocabulary from the checkpoint
        if not self.file.is_file():
            raise self._not_found()
        text = self.file.read_text(encoding="utf-8")
        parts = dict(zip(("train", "val", "test"), split_text(text, self.hparams.split)))
        self.vocab = build_vocab(parts["train"])
        world, rank = (self.trainer.world_size, self.trainer.global_rank) if self.trainer else (1, 0)
        for name, part in parts.items():
            if not part:
                continue
            unknown = set(part) - set(self.vocab)
            if unknown:  # cannot be scored by a model that never saw them; dropping keeps the rest contiguous
                warnings.warn(f"{name} split: dropping {sum(part.count(c) for c in unknown)} occurrences of "
                              f"{len(unknown)} characters absent from the training split: {sorted(unknown)!r}")
                part = "".join(c for c in part if c not in unknown)
            # Each process takes its own block of streams, so the streams stay contiguous under DDP.
            streams = as_streams(encode(part, self.vocab), self.hparams.batch_size * world)
            self.streams[name] = streams[rank * self.hparams.batch_size : (rank + 1) * self.hparams.batch_size]

    def card_info(self) -> dict:
        """What a model card records about this data: the corpus, the splits and the model's input."""
        h = self.hparams
        train, val, test = h.split
        return {
            "dataset": self.file.name if self.file.name != "input.txt" else f"{self.file.parent.name}/input.txt",
            "train_split": f"the first {train:.0%} of the characters",
            "test_split": f"the last {test:.0%} of the characters (val: the {val:.0%} before them)",
            "licence": known_licence(h.path),
            "preprocessing": {"input": "character ids (B, T), id = position in the card's hparams.vocab; "
                              f"losses in nats per character, streams scored {h.seq_len} characters at a time with "
                              "the state carried"},
        }

    def _loader(self, split: str) -> DataLoader | list:
        if split not in self.streams:
            return []
        epoch = (lambda: self.trainer.current_epoch) if self.trainer is not None else None
        data = StreamBatches(self.streams[split], self.hparams.seq_len, self.hparams.random_offset and split == "train",
                             seed=self.hparams.seed, epoch=epoch)
        return ResumableLoader(data, batch_size=None)  # items are whole batches, in order

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """One batch per prompt: ``{"prompt", "length", "temperature", "top_k"}`` for the model's ``predict_step``."""
        h = self.hparams
        requests = [{"prompt": p, "length": h.sample_length, "temperature": h.temperature, "top_k": h.top_k}
                    for p in h.prompts]
        return DataLoader(requests, batch_size=None)
