import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from zoo.datamodules import cifar
from zoo.datamodules.cifar import CIFAR10DataModule, CIFAR10NotFoundError, cutout, random_crop, random_flip


@pytest.mark.parametrize("layout", ["cifar_pickles", "cifar_folder"])
def test_reads_both_formats_with_val_split(layout, request):
    data_dir = request.getfixturevalue(layout)
    dm = CIFAR10DataModule(data_dir=str(data_dir), batch_size=8, val_size=10, download=False)
    dm.prepare_data()
    dm.setup("fit")
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [50, 10, 20]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.uint8 and y.dtype == torch.int64
    # Labels follow the CIFAR ids, and the test split is the official one, in order.
    assert sorted(torch.unique(dm.datasets["test"].labels).tolist()) == list(range(10))


def test_formats_decode_to_the_same_pixels(cifar_pickles, tmp_path):
    from PIL import Image

    arrays = cifar.read_pickles(cifar_pickles / "cifar-10-batches-py")
    assert arrays["train_x"].shape == (60, 32, 32, 3) and arrays["test_x"].shape == (20, 32, 32, 3)
    for i in range(3):  # the same image written as PNG reads back identically
        Image.fromarray(arrays["test_x"][i]).save(tmp_path / f"{i}.png")
        assert np.array_equal(np.asarray(Image.open(tmp_path / f"{i}.png")), arrays["test_x"][i])


def test_cache_is_reused_without_decoding(cifar_folder, monkeypatch, isolated_cache):
    CIFAR10DataModule(data_dir=str(cifar_folder), val_size=5).setup()
    assert len(list((isolated_cache / "datasets").glob("cifar10-*.npz"))) == 1

    def boom(root):
        raise AssertionError("decoded again instead of using the cache")

    monkeypatch.setattr(cifar, "read_image_folder", boom)
    dm = CIFAR10DataModule(data_dir=str(cifar_folder), val_size=5)
    dm.setup()
    assert len(dm.datasets["train"]) == 55


def test_damaged_cache_is_rebuilt(cifar_folder, isolated_cache):
    CIFAR10DataModule(data_dir=str(cifar_folder)).setup()
    (cache_file,) = (isolated_cache / "datasets").glob("*.npz")
    cache_file.write_bytes(cache_file.read_bytes()[:100])
    dm = CIFAR10DataModule(data_dir=str(cifar_folder), val_size=0)
    dm.setup()
    assert len(dm.datasets["train"]) == 60


def test_data_dir_from_environment(cifar_folder, monkeypatch):
    monkeypatch.setenv("ZOO_DATA_DIR", str(cifar_folder))
    assert CIFAR10DataModule().data_dir == cifar_folder


def test_missing_data_offline_names_paths_and_fix(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    dm = CIFAR10DataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(CIFAR10NotFoundError) as err:
        dm.prepare_data()
    msg = str(err.value)
    assert "cifar-10-batches-py" in msg and str(tmp_path / "nowhere") in msg and "ZOO_DATA_DIR" in msg
    assert "network is unreachable" in msg


def test_augmentations_keep_pixels_and_shapes():
    torch.manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).view(2, 3, 8, 8)
    cropped = random_crop(x, 2)
    assert cropped.shape == x.shape and cropped.dtype == torch.uint8
    # Every output is a translate of the reflect-padded input: find it among the 25 possible shifts.
    padded = torch.nn.functional.pad(x.float(), (2, 2, 2, 2), mode="reflect")
    for b in range(2):
        shifts = [padded[b, :, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        assert any(torch.equal(cropped[b].float(), s) for s in shifts)
    flipped = random_flip(x)
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(-1)) for f, o in zip(flipped, x))
    cut = cutout(torch.ones(4, 3, 8, 8), 4)
    assert ((cut == 0).flatten(1).sum(1) > 0).all() and ((cut == 0).flatten(1).sum(1) <= 3 * 25).all()


def test_normalisation_uses_cifar_statistics(cifar_folder):
    dm = CIFAR10DataModule(data_dir=str(cifar_folder))
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = dm.normalize(x)
    expected = (1 - torch.tensor(cifar.MEAN)) / torch.tensor(cifar.STD)
    assert torch.allclose(out[0, :, 0, 0], expected)


@pytest.mark.skipif(not (SHARED_DATA / "cifar10-jpg").is_dir(), reason="../shared/data/cifar10-jpg is absent")
def test_real_cifar10_from_shared_data():
    dm = CIFAR10DataModule(data_dir=str(SHARED_DATA), download=False)
    dm.setup()
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [45000, 5000, 10000]
    assert torch.bincount(dm.datasets["test"].labels).tolist() == [1000] * 10
    # The folder's first test image of each class is the official test_batch order (see the data README).
    assert dm.datasets["test"].images.shape == (10000, 3, 32, 32)


def test_alternating_flip_mirrors_a_fixed_half_then_everything_on_odd_epochs(cifar_folder):
    from types import SimpleNamespace

    plain = CIFAR10DataModule(data_dir=str(cifar_folder), val_size=10, flip=False, download=False)
    alt = CIFAR10DataModule(data_dir=str(cifar_folder), val_size=10, flip="alternate", crop_padding=0, download=False)
    plain.setup(), alt.setup()
    a, b = plain.datasets["train"].images, alt.datasets["train"].images
    mirrored = torch.tensor([not torch.equal(x, y) for x, y in zip(a, b)])
    assert all(torch.equal(y, x.flip(-1)) for x, y in zip(a[mirrored], b[mirrored]))
    assert 0 < mirrored.sum() < len(a)  # a random part, not none or all
    batch = (b[:6], alt.datasets["train"].labels[:6])
    seen = []
    for epoch in (0, 1):
        alt.trainer = SimpleNamespace(training=True, current_epoch=epoch)
        seen.append(alt.on_after_batch_transfer(batch, 0)[0])
    assert torch.equal(seen[1], seen[0].flip(-1))  # every image is seen both ways within two epochs
