"""PairedImageDataModule (datamodules/paired.py) on tiny synthetic files in every layout: AB files, separate A/B
folders, and grey or edge inputs derived from any image folder."""

import numpy as np
import pytest
import torch
from conftest import SHARED_DATA, read_png, write_ab
from PIL import Image

from zoo.datamodules.paired import PairedImageDataModule, PairedImages, grayscale, split_ab


def test_ab_files_split_into_their_halves(ab_data):
    dm = PairedImageDataModule("pairs", data_dir=str(ab_data), load_size=32, crop_size=32)
    dm.setup()
    assert dm.layout == "ab" and [len(dm.datasets[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    a, b = dm.datasets["val"][0]
    raw = torch.from_numpy(read_png(ab_data / "pairs" / "val" / "000.png")).permute(2, 0, 1)
    left, right = split_ab(raw)
    torch.testing.assert_close(a, left.float() / 127.5 - 1)
    torch.testing.assert_close(b, right.float() / 127.5 - 1)
    torch.testing.assert_close(a, -b)  # B was written as A's negative


def test_direction_b_to_a_swaps_the_halves(ab_data):
    dm = PairedImageDataModule("pairs", data_dir=str(ab_data), direction="BtoA", load_size=32, crop_size=32)
    dm.setup()
    a, b = dm.datasets["val"][0]
    raw = torch.from_numpy(read_png(ab_data / "pairs" / "val" / "000.png")).permute(2, 0, 1)
    torch.testing.assert_close(a, split_ab(raw)[1].float() / 127.5 - 1)


def test_joint_augmentation_keeps_pairs_aligned_and_odd_sizes_are_resized(tmp_path):
    write_ab(tmp_path / "same" / "train", 4, size=(90, 41), same_halves=True)  # odd, non-square halves
    items = sorted((tmp_path / "same" / "train").glob("*.png"))
    ds = PairedImages(items, "ab", "AtoB", load_size=40, crop_size=32, train=True)
    crops = set()
    for i in range(4):
        for _ in range(5):
            torch.manual_seed(len(crops) + 10 * i)
            a, b = ds[i]
            assert a.shape == b.shape == (3, 32, 32)
            torch.testing.assert_close(a, b)  # identical halves stay identical through crop and flip
            crops.add(a.sum().item())
    assert len(crops) > 4  # the crops really vary


def test_separate_folders_pair_by_name_and_derived_layouts(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for side in ("A", "B"):
            (tmp_path / "sep" / split / side).mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / "sep" / split / "A" / f"{i}.png")
            Image.fromarray(255 - img).save(tmp_path / "sep" / split / "B" / f"{i}.png")
    Image.fromarray(img).save(tmp_path / "sep" / "train" / "A" / "unpaired.png")
    dm = PairedImageDataModule("sep", data_dir=str(tmp_path), load_size=32, crop_size=32, val_size=1)
    dm.setup()
    assert dm.layout == "separate" and len(dm.datasets["train"]) == 3 and len(dm.datasets["val"]) == 1
    a, b = dm.datasets["test"][0]
    torch.testing.assert_close(a, -b)
    # Any folder of images (here the B side, in sub-folders) becomes grey -> colour pairs.
    gray = PairedImageDataModule("sep", data_dir=str(tmp_path), layout="grayscale", load_size=32, crop_size=32)
    gray.setup()
    assert gray.channels == (1, 3) and len(gray.datasets["test"]) == 8
    a, b = gray.datasets["test"][0]
    torch.testing.assert_close(a, grayscale((b + 1) / 2) * 2 - 1)
    edges = PairedImageDataModule("sep", data_dir=str(tmp_path), layout="edges", load_size=32, crop_size=32)
    edges.setup()
    a, _ = edges.datasets["test"][0]
    assert a.shape == (1, 32, 32) and a.min() >= -1 and a.max() <= 1 and a.std() > 0
    card = edges.card_info()
    assert card["licence"] is None  # a folder the zoo does not know: no licence claimed
    assert card["train_split"] == "train minus 500 images held out for validation (seed 0)"
    assert card["test_split"] == "test"


def test_cards_of_derived_cifar_pairs_carry_the_cifar_licence(tmp_path):
    (tmp_path / "cifar10-jpg" / "train").mkdir(parents=True)
    dm = PairedImageDataModule("cifar10-jpg", data_dir=str(tmp_path), layout="edges", load_size=32, crop_size=32)
    assert dm.card_info()["licence"].startswith("CIFAR-10")


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="No paired dataset at .*nothing_here"):
        PairedImageDataModule("nothing_here", data_dir=str(tmp_path)).setup()


@pytest.mark.skipif(not (SHARED_DATA / "pix2pix_people_outline").is_dir(), reason="shared pix2pix data absent")
def test_real_people_outline_pairs_load_at_any_size():
    dm = PairedImageDataModule("pix2pix_people_outline", data_dir=str(SHARED_DATA), layout="ab", load_size=143,
                               crop_size=128)
    dm.setup()
    assert len(dm.datasets["train"]) == 100 and len(dm.datasets["val"]) == 155
    for i in range(0, 155, 31):  # some of these are less than 256 px high
        a, b = dm.datasets["val"][i]
        assert a.shape == b.shape == (3, 128, 128)
