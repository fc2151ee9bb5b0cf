"""CharTextDataModule (datamodules/text.py): vocabulary, splits and contiguous streams, on a tiny corpus."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA as SHARED
from conftest import TEXT

from zoo.datamodules.text import CharTextDataModule, as_streams, build_vocab, decode, encode, split_text


def test_vocabulary_round_trip_and_split():
    train, val, test = split_text(TEXT, (0.9, 0.05, 0.05))
    assert train + val + test == TEXT and len(train) == int(0.9 * len(TEXT))
    vocab = build_vocab(train)
    assert vocab == "".join(sorted(set(train)))
    assert decode(encode(test, vocab), vocab) == test
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode("to be€", vocab)


def test_batches_are_contiguous_streams(text_file: Path):
    dm = CharTextDataModule(str(text_file), batch_size=3, seq_len=10)
    dm.setup("fit")
    train = TEXT[: int(0.9 * len(TEXT))]
    assert dm.vocab == build_vocab(train)
    batches = list(CharTextDataModule._loader(dm, "val"))  # no random offset outside training
    x0, y0 = batches[0]
    assert x0.shape == (3, 10) and torch.equal(x0[:, 1:], y0[:, :-1])  # targets are the inputs shifted by one
    for (x, y), (nx, _) in itertools.pairwise(batches):
        assert torch.equal(nx[:, 0], y[:, -1])  # row b of batch i+1 continues row b of batch i
    # Laid end to end, each row is one contiguous piece of the validation text; every character is scored.
    rows = [decode(torch.cat([batches[0][0][b, :1]] + [y[b] for _, y in batches]), dm.vocab) for b in range(3)]
    val = TEXT[len(train) : len(train) + int(0.05 * len(TEXT))]
    assert "".join(rows) == val[: 3 * (len(val) // 3)]


def test_missing_corpus_names_the_path(tmp_path: Path):
    dm = CharTextDataModule("tinyshakespeare/input.txt", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "tinyshakespeare" / "input.txt")) as err:
        dm.setup("fit")
    assert "curl" in str(err.value)


@pytest.mark.skipif(not (SHARED / "tinyshakespeare/input.txt").is_file(), reason="staged data absent")
def test_real_tinyshakespeare_vocabulary():
    dm = CharTextDataModule("tinyshakespeare/input.txt", data_dir=str(SHARED))
    dm.setup("fit")
    assert len(dm.vocab) == 65 and dm.vocab[0] == "\n"
    assert sum(s.numel() for s in dm.streams.values()) > 0.999 * 1_115_394  # < 64 characters per split dropped
    assert as_streams(torch.arange(10), 3).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
