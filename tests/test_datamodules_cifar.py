import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from zoo.datamodules import cifar
from zoo.datamodules.cifar import CIFAR10DataModule, CIFAR10NotFoundError, cutout, random_crop, random_flip
from zoo.datamodules.pseudo_labels import PseudoLabelsError


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


# --------------------------------------------------------------- long tail, balanced sampling, policies, pseudo-labels
def test_long_tail_after_the_val_split_with_class_counts(cifar_pickles):
    from zoo.datamodules.sampling import long_tail_quotas

    plain = CIFAR10DataModule(data_dir=str(cifar_pickles), val_size=10, download=False)
    tail = CIFAR10DataModule(data_dir=str(cifar_pickles), val_size=10, imbalance_ratio=5, download=False)
    plain.setup(), tail.setup()
    before = plain.class_counts()
    assert before.dtype == torch.int64 and before.sum() == 50
    assert tail.class_counts().tolist() == long_tail_quotas(before, 5).tolist()
    assert tail.class_counts()[0] == before[0] == before.max() and tail.class_counts()[-1] == before.max() // 5
    for split in ("val", "test"):  # untouched: the same images as without the tail
        assert torch.equal(tail.datasets[split].images, plain.datasets[split].images)
    kept = tail.datasets["train"].images
    assert all(any(torch.equal(k, p) for p in plain.datasets["train"].images) for k in kept)  # a subset
    again = CIFAR10DataModule(data_dir=str(cifar_pickles), val_size=10, imbalance_ratio=5, download=False)
    assert torch.equal(again.class_counts(), tail.class_counts())  # class_counts runs setup itself
    assert torch.equal(again.datasets["train"].images, kept)  # seeded
    assert "imbalance ratio 5" in tail.card_info()["train_split"] and tail.card_info()["imbalance_ratio"] == 5
    assert "imbalance_ratio" not in plain.card_info()


@pytest.mark.parametrize("sampling", ["oversample", "undersample"])
def test_balanced_sampling_of_the_long_tail(cifar_pickles, sampling):
    dm = CIFAR10DataModule(data_dir=str(cifar_pickles), val_size=0, imbalance_ratio=10, batch_size=1,
                           sampling=sampling, download=False)
    dm.setup()
    counts = dm.class_counts()  # 10 7 5 4 3 2 2 1 1 1
    assert counts.tolist() == [10, 7, 5, 4, 3, 2, 2, 1, 1, 1]
    loader = dm.train_dataloader()
    epoch = torch.cat([y for _, y in loader])
    drawn = torch.bincount(epoch, minlength=10)
    if sampling == "oversample":
        assert len(epoch) == counts.sum() and drawn.max() - drawn.min() <= 1
    else:
        assert len(epoch) == 10 * counts.min() and drawn.tolist() == [1] * 10
    assert torch.equal(epoch, torch.cat([y for _, y in dm.train_dataloader()]))  # same seed and epoch: same order
    loader.sampler.set_epoch(1)
    assert not torch.equal(epoch, torch.cat([y for _, y in loader]))


def test_augment_policy_runs_per_batch_seeded_by_epoch_and_index(cifar_folder):
    from types import SimpleNamespace

    dm = CIFAR10DataModule(data_dir=str(cifar_folder), val_size=10, crop_padding=0, flip=False,
                           augment_policy="trivialaugment", download=False)
    dm.setup()
    batch = (dm.datasets["train"].images[:16], dm.datasets["train"].labels[:16])

    def augmented(epoch, index):
        progress = SimpleNamespace(current=SimpleNamespace(ready=index))
        dm.trainer = SimpleNamespace(training=True, current_epoch=epoch, global_rank=0,
                                     fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(batch_progress=progress)))
        torch.manual_seed(index)  # the global RNG has no say
        return dm.on_after_batch_transfer(batch, 0)[0]

    assert torch.equal(augmented(0, 3), augmented(0, 3))
    assert not torch.equal(augmented(0, 3), augmented(0, 4)) and not torch.equal(augmented(0, 3), augmented(1, 3))
    assert not torch.equal(augmented(0, 3), dm.normalize(batch[0]))


def test_resume_replays_the_long_tail_sampler_and_policy(cifar_pickles, tmp_path):
    """tests/test_resume.py's stop-and-resume, with the new options on: the resumed weights are the same."""
    from test_resume import fit, last_state

    options = ("--data.imbalance_ratio", "2", "--data.sampling", "oversample", "--data.augment_policy",
               "randaugment")
    assert fit(cifar_pickles, tmp_path / "a", *options) == 0
    reference, _ = last_state(tmp_path / "a")
    assert fit(cifar_pickles, tmp_path / "b", *options, "--trainer.callbacks+=test_resume.SigtermAt",
               "--trainer.callbacks.step=7") == 143
    _, path = last_state(tmp_path / "b")
    assert fit(cifar_pickles, tmp_path / "b", *options, "--ckpt_path", str(path)) == 0
    resumed, _ = last_state(tmp_path / "b")
    assert resumed["global_step"] == reference["global_step"]
    for key, value in reference["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_labelled_subset_unlabelled_pool_and_pseudo_labels(cifar_pickles, tmp_path):
    from safetensors.torch import save_file

    kwargs = {"data_dir": str(cifar_pickles), "val_size": 10, "labelled": 20, "batch_size": 8, "download": False}
    dm = CIFAR10DataModule(**kwargs)
    dm.setup()
    assert dm.class_counts().tolist() == [2] * 10 and dm.datasets["train"].labels.dtype == torch.int64
    xs, idx = zip(*dm.unlabelled_dataloader())
    x, idx = torch.cat(xs), torch.cat(idx)
    assert len(idx) == 30 and torch.equal(idx, idx.sort().values) and x.dtype == torch.float32
    assert torch.allclose(x[0], dm.normalize(dm.datasets["unlabelled"].images[:1])[0])
    # The teacher's file: probabilities over the pool, half of them unsure (max 0.4 < threshold 0.5).
    probs = torch.full((30, 10), 0.6 / 9)
    probs[torch.arange(30), torch.arange(30) % 10] = 0.4
    probs[::2] = torch.nn.functional.one_hot(torch.arange(0, 30, 2) % 10, 10).float() * 0.9 + 0.01
    save_file({"indices": idx, "probs": probs}, tmp_path / "pseudo.safetensors")
    soft = CIFAR10DataModule(**kwargs, pseudo_labels=str(tmp_path / "pseudo.safetensors"), pseudo_threshold=0.5)
    soft.setup()
    targets = soft.datasets["train"].labels
    assert targets.shape == (20 + 15, 10) and targets.dtype == torch.float32
    assert torch.equal(targets[:20].sum(1), torch.ones(20)) and torch.equal(targets[20:], probs[::2])
    assert torch.equal(soft.datasets["train"].images[20:], dm.datasets["unlabelled"].images[::2])
    assert soft.class_counts().sum() == 35
    _, y = next(iter(soft.train_dataloader()))
    assert y.shape == (8, 10)
    hard = CIFAR10DataModule(**kwargs, pseudo_labels=str(tmp_path / "pseudo.safetensors"), pseudo_hard=True)
    hard.setup()
    assert set(hard.datasets["train"].labels.unique().tolist()) == {0.0, 1.0} and len(hard.datasets["train"]) == 50
    # Indices outside the pool (here: validation images) would leak; they are refused.
    leaky = torch.tensor(sorted(set(range(60)) - set(idx.tolist())))[:3]
    save_file({"indices": leaky, "probs": torch.full((3, 10), 0.1)}, tmp_path / "leaky.safetensors")
    with pytest.raises(PseudoLabelsError, match="not in the unlabelled pool"):
        CIFAR10DataModule(**kwargs, pseudo_labels=str(tmp_path / "leaky.safetensors")).setup()
    with pytest.raises(ValueError, match="needs labelled > 0"):
        CIFAR10DataModule(data_dir=str(cifar_pickles), pseudo_labels=str(tmp_path / "pseudo.safetensors"))


def test_soft_pseudo_labels_train_the_classifier(cifar_pickles, tmp_path):
    """One fast_dev_run step of the classic CNN on (B, 10) float targets, through the CLI."""
    from safetensors.torch import save_file

    from zoo.cli import main

    dm = CIFAR10DataModule(data_dir=str(cifar_pickles), val_size=10, labelled=20, download=False)
    idx = torch.cat([i for _, i in dm.unlabelled_dataloader()])
    save_file({"indices": idx, "probs": torch.softmax(torch.randn(len(idx), 10), 1)}, tmp_path / "p.safetensors")
    assert main(["fit", "--model", "cifar_cnn", "--data", "CIFAR10DataModule", "--data.data_dir", str(cifar_pickles),
                 "--data.val_size", "10", "--data.labelled", "20", "--data.pseudo_labels", str(tmp_path / "p.safetensors"),
                 "--data.batch_size", "8", "--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path),
                 "--trainer.enable_progress_bar", "false"]) == 0
