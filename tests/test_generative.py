"""DCGAN, VAE, the MNIST/Fashion-MNIST DataModules and the ImageGrid callback, on tiny idx files written in
torchvision's on-disk format (no network, no real data unless /work/shared/data is there)."""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image

import zoo
from zoo.callbacks import ImageGrid
from zoo.datamodules import FashionMNISTDataModule, MNISTDataModule
from zoo.datamodules.mnist import RAW_FILES, MNISTNotFoundError
from zoo.dcgan import DCGAN
from zoo.gan import discriminator_loss, generator_loss
from zoo.metrics import PenultimateFeatures, frechet_distance
from zoo.vae import VAE, bits_per_dim, negative_elbo

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ZOO_DATA_DIR") or ROOT.parent / "shared" / "data")
QUIET = {"logger": False, "enable_progress_bar": False, "enable_model_summary": False, "enable_checkpointing": False}


# ------------------------------------------------------------------------------------------------ tiny idx data
def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """An idx file as LeCun distributes it: magic (0, 0, 0x08 = uint8, ndim), big-endian dims, raw bytes."""
    data = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(data)


def make_raw(root: Path, name: str, gz: bool, n_train: int = 40, n_test: int = 20) -> Path:
    """``root/<name>/raw/`` with the four idx files; image i is a bar whose length encodes its label (learnable)."""
    raw = root / name / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = np.zeros((n, 28, 28), np.uint8)
        for i, y in enumerate(labels):
            images[i, 4:24, 4 : 6 + 2 * y] = 255
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return root


@pytest.fixture
def mnist_dir(tmp_path) -> Path:
    return make_raw(tmp_path, "MNIST", gz=False)


@pytest.fixture
def fashion_dir(tmp_path) -> Path:
    return make_raw(tmp_path, "FashionMNIST", gz=True)  # the shared copy is .gz only, like torchvision's download


# --------------------------------------------------------------------------------------------------- data
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


# ---------------------------------------------------------------------------------------------------- VAE
def test_negative_elbo_on_a_hand_checkable_case():
    # Two pixels x = (1, 0) with logits 0: each costs log 2. Posterior mu = (1, 2), var = (1, 2):
    # KL = 0.5 * [(1 + 1 - 1 - 0) + (4 + 2 - 1 - ln 2)] = 0.5 + 0.5 * (5 - ln 2).
    logits, x = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 0.0]]]])
    mu, logvar = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, math.log(2)]])
    out = negative_elbo(logits, x, mu, logvar, beta=4.0)
    kl = 0.5 + 0.5 * (5 - math.log(2))
    assert out["recon"].item() == pytest.approx(2 * math.log(2))
    assert out["kl"].item() == pytest.approx(kl)
    assert out["nelbo"].item() == pytest.approx(2 * math.log(2) + kl)
    assert out["loss"].item() == pytest.approx(2 * math.log(2) + 4 * kl)  # β weights the KL in the loss only
    assert bits_per_dim(torch.tensor(2 * math.log(2)), 2).item() == pytest.approx(1.0)  # 1 bit per pixel


@pytest.mark.parametrize("kwargs", [{}, {"beta": 4.0}, {"kind": "ae", "noise_std": 0.3}, {"depth": 1}])
def test_vae_shapes_finite_loss_and_every_parameter_learns(kwargs):
    torch.manual_seed(0)
    model = zoo.get_model("vae", **kwargs)
    x = torch.rand(4, 1, 28, 28)
    out = model.losses(x, corrupt=model.hparams.noise_std > 0)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.reconstruct(x).shape == x.shape and 0 <= model.reconstruct(x).min() <= model.reconstruct(x).max() <= 1
    assert model.sample(3).shape == (3, 1, 28, 28) and model.interpolate(x[0], x[1], steps=5).shape == (5, 1, 28, 28)
    # Rebuilt from its saved hyperparameters, with the same weights, it is the same model.
    twin = VAE(**model.hparams)
    twin.load_state_dict(model.state_dict())
    assert torch.equal(twin.reconstruct(x), model.reconstruct(x))


def test_vae_trains_and_test_logs_nelbo_and_bits_per_dim(mnist_dir):
    torch.manual_seed(0)
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=10, val_size=10)
    model = VAE(latent_dim=4, widths=[8, 16], hidden=32)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=1, **QUIET)
    before = trainer.test(model, datamodule=dm, verbose=False)[0]
    trainer = L.Trainer(max_epochs=4, limit_val_batches=1, **QUIET)
    trainer.fit(model, datamodule=dm)
    after = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert after["test/nelbo"] < before["test/nelbo"]  # 12 steps of Adam already help
    torch.manual_seed(123)  # the test's z draws are seeded per batch, not taken from the global RNG
    assert trainer.test(model, datamodule=dm, verbose=False)[0] == after
    assert after["test/bits_per_dim"] == pytest.approx(after["test/nelbo"] / (784 * math.log(2)), rel=1e-5)


def test_vae_cosine_schedule_decays_the_learning_rate_to_zero_by_the_last_step(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=10, val_size=10)
    model = VAE(latent_dim=4, widths=[8, 16], hidden=32, schedule="cosine")
    lrs = []

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    L.Trainer(max_epochs=2, limit_val_batches=0, callbacks=[RecordLR()], **QUIET).fit(model, datamodule=dm)
    assert lrs[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < 0.1 * lrs[0]  # cosine over the run's steps, whatever their number


# -------------------------------------------------------------------------------------------------- DCGAN
def test_dcgan_losses_are_bce_with_logits():
    assert discriminator_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(2 * math.log(2))
    assert generator_loss(torch.zeros(4)).item() == pytest.approx(math.log(2))
    big = torch.full((2,), 1e4, dtype=torch.float16)  # logits that would overflow a sigmoid + log in fp16
    assert torch.isfinite(discriminator_loss(big, -big)) and torch.isfinite(generator_loss(-big))


@pytest.mark.parametrize("image_size", [32, 64])
def test_dcgan_shapes_and_paper_init(image_size):
    torch.manual_seed(0)
    model = zoo.get_model("dcgan", image_size=image_size, gen_width=16, disc_width=16)
    images = model.sample(3)
    assert images.shape == (3, 1, image_size, image_size) and images.abs().max() <= 1
    assert model.discriminator(images).shape == (3,)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert all(abs(m.weight.std().item() - 0.02) < 0.004 for m in convs if m.weight.numel() > 1000)
    with pytest.raises(ValueError, match="power of two"):
        DCGAN(image_size=28)


class TinyImages(torch.utils.data.Dataset):
    def __init__(self, n: int = 16, size: int = 16):
        self.x = torch.rand(n, 1, size, size) * 2 - 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], 0


def tiny_gan() -> DCGAN:
    return DCGAN(latent_dim=8, gen_width=8, disc_width=8, image_size=16)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_one_manual_step_updates_both_networks(precision):
    torch.manual_seed(0)
    model = tiny_gan()
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    trainer = L.Trainer(max_steps=1, precision=precision, **QUIET)
    trainer.fit(model, torch.utils.data.DataLoader(TinyImages(), batch_size=8))
    assert trainer.global_step == 2  # Lightning counts one step per optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))
    logged = trainer.callback_metrics
    assert torch.isfinite(logged["train/loss_d"]) and torch.isfinite(logged["train/loss_g"])
    twin = DCGAN(**model.hparams)  # rebuildable from its saved (primitive) hyperparameters
    twin.load_state_dict(model.state_dict())


DDP_SCRIPT = """
import sys, torch, lightning as L
from zoo.dcgan import DCGAN
torch.manual_seed(0)  # same initial weights on both ranks; different data via the DistributedSampler
x = torch.rand(32, 1, 16, 16) * 2 - 1
model = DCGAN(latent_dim=8, gen_width=8, disc_width=8, image_size=16)
trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=1, limit_train_batches=2,
                    logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
trainer.fit(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4))
total = sum(p.double().sum().item() for p in model.parameters())
print(f"RANK {{trainer.global_rank}} STEPS {{trainer.global_step}} CHECKSUM {{total:.10f}}", flush=True)
"""


def test_two_process_cpu_ddp_fit(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(root=str(ROOT))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script)], check=False, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = sorted(re.findall(r"RANK (\d) STEPS (\d+) CHECKSUM (-?\d+\.\d{10})", proc.stdout + proc.stderr))
    assert [r[:2] for r in ranks] == [("0", "4"), ("1", "4")], proc.stdout[-2000:]
    assert ranks[0][2] == ranks[1][2]  # gradients were all-reduced: both replicas hold the same weights


def test_frechet_distance_on_hand_checkable_features():
    class Flatten(torch.nn.Module):
        num_features = 4

        def forward(self, x):
            return x.flatten(1)

    torch.manual_seed(0)
    real = torch.randn(2000, 1, 2, 2)
    # Same samples shifted by 1 in each of the 4 dims: equal covariances, so the distance is |shift|^2 = 4.
    assert frechet_distance(Flatten(), [real], [real + 1]) == pytest.approx(4.0, abs=1e-3)
    assert frechet_distance(Flatten(), real.split(500), real.split(300)) == pytest.approx(0.0, abs=1e-3)


def test_dcgan_test_logs_frechet_distance_and_floor():
    torch.manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 6), torch.nn.ReLU(),
                                     torch.nn.Linear(6, 10))
    features = PenultimateFeatures(classifier)
    assert features(torch.zeros(2, 1, 16, 16)).shape == (2, 6)
    model = tiny_gan()
    model.attach_features(features)
    assert not any("classifier" in k for k in model.state_dict())  # the extractor is not saved with the GAN
    loader = torch.utils.data.DataLoader(TinyImages(n=64), batch_size=16)
    result = L.Trainer(**QUIET).test(model, loader, verbose=False)[0]
    assert result["test/frechet_distance"] > result["test/frechet_distance_floor"] >= 0  # noise vs real images


def test_dcgan_loads_its_fd_classifier_by_source_and_reports_reproducible_distances(tmp_path):
    """``fd_features`` names a zoo checkpoint (here a Lightning .ckpt of a 1-channel classic CNN fitted one step);
    two test runs of the same GAN give the same distances, because the generated images are seeded."""
    from zoo.cifar_cnn import CifarCNN

    torch.manual_seed(0)
    images = TinyImages(n=64, size=32)
    labelled = torch.utils.data.TensorDataset(images.x, torch.randint(0, 10, (64,)))
    trainer = L.Trainer(**{**QUIET, "enable_checkpointing": True}, max_steps=1, default_root_dir=tmp_path)
    classifier = CifarCNN(in_channels=1)
    classifier.hparams["_class_path"] = "zoo.cifar_cnn.CifarCNN"  # as `zoo fit` (LightningCLI) records it
    trainer.fit(classifier, torch.utils.data.DataLoader(labelled, batch_size=16))
    ckpt = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(ckpt)

    gan = DCGAN(latent_dim=8, gen_width=8, disc_width=8, image_size=32, fd_features=str(ckpt))
    loader = torch.utils.data.DataLoader(images, batch_size=16)
    runs = [L.Trainer(**QUIET).test(gan, loader, verbose=False)[0] for _ in range(2)]
    assert runs[0]["test/frechet_distance"] > runs[0]["test/frechet_distance_floor"] >= 0
    assert runs[0] == runs[1]
    assert not any(k.startswith("_features") or "classifier" in k for k in gan.state_dict())


# -------------------------------------------------------------------------------------------------- ImageGrid
class SummaryWriterLike:
    """Records add_image calls as TensorBoard's SummaryWriter would receive them (tensorboard is not installed)."""

    def __init__(self):
        self.images = []

    def add_image(self, tag, image, global_step=None):
        self.images.append((tag, tuple(image.shape), global_step))


class RecordingLogger(CSVLogger):
    """A logger whose ``experiment`` is a SummaryWriter-like recorder."""

    def __init__(self, save_dir):
        super().__init__(save_dir, name="rec")
        self.writer = SummaryWriterLike()

    @property
    def experiment(self):
        return self.writer

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, metrics=None):
        pass

    def save(self):
        pass


def test_image_grid_writes_pngs_logs_and_keeps_its_noise(mnist_dir, tmp_path):
    torch.manual_seed(0)
    grid = ImageGrid(num_images=16, nrow=4)
    logger = RecordingLogger(tmp_path / "logs")
    trainer = L.Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, logger=logger, callbacks=[grid],
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(VAE(latent_dim=4, widths=[8, 16], hidden=32), datamodule=MNISTDataModule(str(mnist_dir), 16, 10))
    names = sorted(p.name for p in grid.saved)
    assert names == [f"{k}_epoch00{e}.png" for k in ("reconstructions", "samples") for e in (0, 1)]
    assert all(p.parent == Path(trainer.log_dir) / "images" for p in grid.saved)
    with Image.open(grid.saved[0]) as im:  # 16 samples, 4 per row, 2-px padding
        assert im.size == (4 * 30 + 2, 4 * 30 + 2)
    assert {tag for tag, _, _ in logger.writer.images} == {"images/samples", "images/reconstructions"}
    assert grid._source == "val"  # inputs for the reconstructions come from the validation set
    # The fixed noise survives a checkpoint round trip.
    restored = ImageGrid()
    restored.load_state_dict(grid.state_dict())
    assert restored.noise.shape == (16, 4) and torch.equal(restored.noise, grid.noise)


def test_image_grid_sends_to_wandb(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    logger = WandbLogger(save_dir=str(tmp_path), mode="disabled")
    sent = []
    monkeypatch.setattr(logger, "log_image", lambda key, images, step=None, **kw: sent.append((key, images[0].shape)))
    trainer = L.Trainer(logger=logger, default_root_dir=tmp_path, enable_progress_bar=False)
    path = ImageGrid(nrow=2).emit(trainer, "samples", torch.rand(4, 1, 8, 8), epoch=3)
    assert path.name == "samples_epoch003.png" and path.is_file()
    assert sent == [("images/samples", (3, 2 * 10 + 2, 2 * 10 + 2))]  # make_grid repeats grey to 3 channels


def test_image_grid_uses_the_same_noise_every_epoch():
    torch.manual_seed(0)
    model, grid = tiny_gan(), ImageGrid(num_images=8)
    seen = []
    original = model.image_grids
    model.image_grids = lambda noise, batch: (seen.append(noise.clone()), original(noise, batch))[1]
    trainer = L.Trainer(max_epochs=2, callbacks=[grid], **QUIET)
    trainer.fit(model, torch.utils.data.DataLoader(TinyImages(), batch_size=8))
    assert len(seen) == 2 and torch.equal(seen[0], seen[1]) and seen[0].shape == (8, 8, 1, 1)


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
