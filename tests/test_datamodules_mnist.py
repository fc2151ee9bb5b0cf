"""The MNIST/Fashion-MNIST DataModules (datamodules/mnist.py) on tiny idx files written in torchvision's on-disk
format, and the configs that train on them (no network, no real data unless /work/shared/data is there)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import make_raw

from zoo.datamodules import FashionMNISTDataModule, MNISTDataModule
from zoo.datamodules.mnist import RAW_FILES, MNISTNotFoundError

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZOO_DATA_DIR") or ROOT.parent / "shared" / "data")


@pytest.fixture
def fashion_dir(tmp_path) -> Path:
    return make_raw(tmp_path, "FashionMNIST", gz=True)  # the shared copy is .gz only, like torchvision's download


def test_mnist_reads_idx_files_with_split_and_range(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=8, val_size=10, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [30, 10, 20]
    x, y = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and y.tolist() == list(range(8))
    assert x.min() == 0 and x.max() == 1
    assert x[3, 0, 10].sum() == 2 + 2 * 3  # the bar of label 3 is 8 pixels long


def test_fashion_gz_only_is_decompressed_into_the_cache(fashion_dir, isolated_cache):
    dm = FashionMNISTDataModule(data_dir=str(fashion_dir), batch_size=4, val_size=0, image_size=32,
                                value_range="-1,1", download=False)
    dm.setup()
    assert not (fashion_dir / "FashionMNIST" / "raw" / RAW_FILES[0]).exists()  # the data folder is left alone
    assert len(list(isolated_cache.glob(f"datasets/fashionmnist-*/FashionMNIST/raw/{RAW_FILES[0]}"))) == 1
    assert dm.val_dataloader() == []
    x, _ = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert x.shape == (4, 1, 32, 32) and x.min() == -1 and x.max() == 1
    assert (x[:, :, :2] == -1).all() and (x[:, :, :, -2:] == -1).all()  # pad keeps a black border


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped"])
def test_a_damaged_decompressed_cache_is_rebuilt(fashion_dir, isolated_cache, damage, capsys):
    def first_test_batch():
        dm = FashionMNISTDataModule(data_dir=str(fashion_dir), batch_size=4, val_size=0, download=False)
        dm.setup()
        return next(iter(dm.test_dataloader()))[0]

    expected = first_test_batch()
    (cached,) = isolated_cache.glob(f"datasets/fashionmnist-*/FashionMNIST/raw/{RAW_FILES[2]}")  # test images
    data = bytearray(cached.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x10
    cached.write_bytes(bytes(data))
    assert torch.equal(first_test_batch(), expected)
    assert "does not match its checksum; decompressing it again" in capsys.readouterr().out


def test_bilinear_resize_and_binarisation(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=4, image_size=64, resize="bilinear",
                         binarize="bernoulli")
    dm.setup()
    x, _ = dm.on_after_batch_transfer(next(iter(dm.test_dataloader())), 0)
    assert x.shape == (4, 1, 64, 64) and set(torch.unique(x).tolist()) <= {0.0, 1.0}


def test_missing_data_names_the_paths_and_the_fix(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(MNISTNotFoundError) as err:
        dm.prepare_data()
    assert str(tmp_path / "MNIST" / "raw" / RAW_FILES[0]) in str(err.value) and "ZOO_DATA_DIR" in str(err.value)


# --------------------------------------------------------------------------------------------- configs & CLI
@pytest.mark.parametrize("config,data", [("vae_mnist", "MNIST"), ("dcgan_fashion_mnist", "FashionMNIST"),
                                         ("cnn_fashion_mnist", "FashionMNIST")])
def test_config_runs_one_batch_through_the_cli(config, data, tmp_path):
    from zoo.cli import main

    make_raw(tmp_path / "data", data, gz=data == "FashionMNIST", n_train=24, n_test=8)
    main(["fit", "--config", str(ROOT / "configs" / f"{config}.yaml"), "--trainer.fast_dev_run", "1",
          "--data.val_size", "8",
          "--trainer.default_root_dir", str(tmp_path / "run"), "--data.data_dir", str(tmp_path / "data"),
          "--data.batch_size", "8", "--trainer.enable_progress_bar", "false"])
    if config != "cnn_fashion_mnist":  # the FD classifier has no image grid
        assert list((tmp_path / "run").rglob("samples_epoch000.png"))


@pytest.mark.skipif(not (SHARED_DATA / "FashionMNIST" / "raw").is_dir(), reason="no shared Fashion-MNIST copy")
def test_real_fashion_mnist_loads():
    dm = FashionMNISTDataModule(data_dir=str(SHARED_DATA), image_size=32, value_range="-1,1", val_size=0)
    dm.setup()
    assert len(dm.datasets["train"]) == 60000 and len(dm.datasets["test"]) == 10000
    assert torch.bincount(dm.datasets["test"].labels).tolist() == [1000] * 10


# ------------------------------------------------------------------------ class counts, balanced sampling, policies
def test_class_counts_and_undersampling(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=1, val_size=10, sampling="undersample", download=False)
    counts = dm.class_counts()  # runs setup
    assert counts.dtype == torch.int64 and counts.sum() == 30 and len(counts) == 10
    labels = torch.cat([y for _, y in dm.train_dataloader()])
    assert torch.bincount(labels, minlength=10).tolist() == [int(counts.min())] * 10


def test_augment_policy_per_batch_seeded_by_epoch_and_index(mnist_dir):
    from types import SimpleNamespace

    dm = FashionMNISTDataModule(data_dir=str(make_raw(mnist_dir, "FashionMNIST", gz=False)), val_size=0,
                                image_size=32, augment_policy="randaugment", download=False)
    dm.setup()
    batch = (dm.datasets["train"].images[:16], dm.datasets["train"].labels[:16])
    plain = dm.on_after_batch_transfer(batch, 0)[0]  # no trainer: no augmentation

    def augmented(epoch, index):
        progress = SimpleNamespace(current=SimpleNamespace(ready=index))
        dm.trainer = SimpleNamespace(training=True, current_epoch=epoch, global_rank=0,
                                     fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))
        return dm.on_after_batch_transfer(batch, 0)[0]

    x = augmented(0, 2)
    assert x.shape == plain.shape == (16, 1, 32, 32) and torch.equal(x, augmented(0, 2))
    assert not torch.equal(x, plain) and not torch.equal(x, augmented(1, 2))


def test_classifier_config_trains_with_sampling_and_policy(tmp_path):
    from zoo.cli import main

    make_raw(tmp_path / "data", "FashionMNIST", gz=True, n_train=24, n_test=8)
    main(["fit", "--config", str(ROOT / "configs" / "cnn_fashion_mnist.yaml"), "--trainer.fast_dev_run", "1",
          "--data.val_size", "8", "--data.sampling", "oversample", "--data.augment_policy", "trivialaugment",
          "--trainer.default_root_dir", str(tmp_path / "run"), "--data.data_dir", str(tmp_path / "data"),
          "--data.batch_size", "8", "--trainer.enable_progress_bar", "false"])
