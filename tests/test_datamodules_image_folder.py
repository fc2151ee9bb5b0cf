"""ImageFolderDataModule (datamodules/image_folder.py) on a tiny synthetic image folder (no network)."""

from __future__ import annotations

import pytest
import torch
from test_efficientnet import no_downloads, tiny_model, trainer  # noqa: F401 (no_downloads: autouse fixture)

from zoo.datamodules.image_folder import ImageFolderDataModule, ImageFolderNotFoundError, class_weights


def test_seeded_split_of_one_folder_and_balancing(image_root):
    one = str(image_root / "tiny" / "train")  # class folders directly, no train/val
    splits = []
    for _ in range(2):
        dm = ImageFolderDataModule(one, val_fraction=0.25, seed=3)
        dm.setup("fit")
        splits.append(sorted(dm.datasets["val"].indices))
    assert splits[0] == splits[1] and len(splits[0]) == 3
    assert not set(splits[0]) & set(dm.datasets["train"].indices)
    assert dm.datasets["test"] is dm.datasets["val"]
    w = class_weights([0, 0, 0, 1], 2)
    assert torch.allclose(w, torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0], dtype=w.dtype))


def test_test_uses_val_when_no_test_folder(image_root):
    dm = ImageFolderDataModule("tiny", data_dir=str(image_root))
    dm.setup("test")
    assert dm.datasets["test"] is dm.datasets["val"] and dm.classes == ["ants", "bees"]
    assert dm.card_info()["test_split"] == "val"
    result = trainer().test(tiny_model(), dm, verbose=False)[0]
    assert 0 <= result["test/acc"] <= 1


def test_missing_data_names_the_folder(tmp_path):
    with pytest.raises(ImageFolderNotFoundError, match=str(tmp_path / "nope" / "train")):
        ImageFolderDataModule("nope", data_dir=str(tmp_path)).setup("fit")
