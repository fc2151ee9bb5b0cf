"""The ImageGrid callback (callbacks/image_grid.py): PNGs, logger images and fixed noise, with a VAE on tiny MNIST
idx files and a tiny DCGAN."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from conftest import QUIET
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image
from test_dcgan import TinyImages, tiny_gan

from zoo.callbacks import ImageGrid
from zoo.datamodules import MNISTDataModule
from zoo.vae import VAE


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
