"""ImageFolderDataModule (datamodules/image_folder.py) on a tiny synthetic image folder (no network)."""

from __future__ import annotations

import pytest
import torch
from test_efficientnet import no_downloads, tiny_model, trainer  # noqa: F401 (no_downloads: autouse fixture)

from zoo.datamodules.image_folder import ImageFolderDataModule, ImageFolderNotFoundError


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
    assert dm.class_counts().sum() == 9 and dm.class_counts().dtype == torch.int64


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


def skewed_folder(root):
    """root/skew/train/{ants: 8, bees: 2} (a tail) and val/{ants, bees}: 1 each."""
    import numpy as np
    from PIL import Image

    for split, counts in (("train", (8, 2)), ("val", (1, 1))):
        for cls, n in zip(("ants", "bees"), counts):
            folder = root / "skew" / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((20, 24, 3), 30 * i, np.uint8)).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("sampling,length", [("none", 10), ("oversample", 10), ("undersample", 4)])
def test_sampling_balances_classes_and_is_seeded_per_epoch(tmp_path, sampling, length):
    dm = ImageFolderDataModule("skew", data_dir=str(skewed_folder(tmp_path)), batch_size=1, sampling=sampling)
    dm.setup("fit")
    assert dm.class_counts().tolist() == [8, 2]
    loader = dm.train_dataloader()
    labels = torch.cat([y for _, y in loader])
    assert len(labels) == length
    if sampling != "none":
        assert torch.bincount(labels).tolist() == [length // 2] * 2
        assert torch.equal(labels, torch.cat([y for _, y in dm.train_dataloader()]))  # same seed and epoch
        first = list(loader.sampler)
        loader.sampler.set_epoch(1)
        assert list(loader.sampler) != first


def test_balance_is_an_alias_of_oversample(tmp_path):
    dm = ImageFolderDataModule("skew", data_dir=str(skewed_folder(tmp_path)), batch_size=1, balance=True)
    dm.setup("fit")
    assert dm.sampling == "oversample"
    assert torch.bincount(torch.cat([y for _, y in dm.train_dataloader()])).tolist() == [5, 5]
    with pytest.raises(ValueError, match="balance=True means sampling='oversample'"):
        ImageFolderDataModule("skew", balance=True, sampling="undersample")


def test_augment_policy_goes_into_the_training_transform_before_to_tensor(image_root):
    from torchvision.transforms import v2

    dm = ImageFolderDataModule("tiny", data_dir=str(image_root), augment_policy="autoaugment")
    dm.setup("fit")
    steps = dm.datasets["train"].transform.transforms
    names = [type(t).__name__ for t in steps]
    at = names.index("AutoAugment")
    assert "ToTensor" in names[at + 1] and steps[at].policy == v2.AutoAugmentPolicy.IMAGENET
    assert "AutoAugment" not in [type(t).__name__ for t in dm.eval_transform.transforms]
    x, _ = dm.datasets["train"][0]
    assert x.shape == (3, 224, 224) and x.dtype == torch.float32
