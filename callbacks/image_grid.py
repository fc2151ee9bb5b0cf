"""Image grids of what a generative model makes, each epoch: PNGs in the run dir, also sent to W&B or TensorBoard.

Usage:
    trainer = L.Trainer(callbacks=[ImageGrid(num_images=64)])
    # zoo fit --config configs/dcgan_fashion_mnist.yaml   (the config lists `- class_path: ImageGrid`)

The model says what to draw by exposing:
  * ``image_grids(noise, batch) -> dict[str, Tensor]``: name -> images (N, C, H, W) in [0, 1], e.g.
    ``{"samples": G(noise)}`` for a GAN, ``{"samples": ..., "reconstructions": ...}`` for a VAE, an
    input | output | target strip for an image-to-image model;
  * optionally ``latent_shape`` (a tuple): the callback then draws ``noise`` (N, *latent_shape) once, with a
    fixed seed, keeps it in its state (a resumed run shows the same latents) and passes the same tensor each epoch.
``batch`` is a fixed batch of real inputs: the first ``num_images`` of the first validation batch (seen in the
sanity check), or of the first training batch when there is no validation loop.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid, save_image


def _first(batch: Any, n: int) -> Any:
    """The first ``n`` items of every tensor in a (nested) batch, detached and on the CPU."""
    if isinstance(batch, torch.Tensor):
        return batch[:n].detach().cpu()
    if isinstance(batch, (list, tuple)):
        return type(batch)(_first(b, n) for b in batch)
    if isinstance(batch, dict):
        return {k: _first(v, n) for k, v in batch.items()}
    return batch


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


class ImageGrid(L.Callback):
    """Draw the model's ``image_grids`` at the end of every ``every_n_epochs``-th training epoch.

    Args:
        num_images: images per grid (fixed noise vectors and fixed real inputs).
        nrow: images per grid row.
        every_n_epochs: draw every this many epochs (the last epoch is always drawn).
        seed: seed of the fixed noise.
        subdir: folder under the trainer's log dir for the PNGs (``<subdir>/<name>_epoch007.png``).
    """

    def __init__(self, num_images: int = 64, nrow: int = 8, every_n_epochs: int = 1, seed: int = 0,
                 subdir: str = "images"):
        self.num_images, self.nrow, self.every_n_epochs = num_images, nrow, every_n_epochs
        self.seed, self.subdir = seed, subdir
        self.noise: torch.Tensor | None = None
        self.batch: Any = None
        self._source = ""
        self.saved: list[Path] = []  # PNGs written by this process, newest last

    # ------------------------------------------------------------------------------------------ fixed inputs
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        shape = getattr(pl_module, "latent_shape", None)
        if shape is not None and self.noise is None:  # a restored state keeps its noise
            g = torch.Generator().manual_seed(self.seed)
            self.noise = torch.randn(self.num_images, *shape, generator=g)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        # Validation images are preferred; they replace a training batch only until the first grid is drawn.
        replace = self.batch is None or (self._source == "train" and not self.saved)
        if batch_idx == 0 and dataloader_idx == 0 and replace:
            self.batch, self._source = _first(batch, self.num_images), "val"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self.batch is None:
            self.batch, self._source = _first(batch, self.num_images), "train"

    # ----------------------------------------------------------------------------------------------- drawing
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        if not (last or (epoch + 1) % self.every_n_epochs == 0) or not trainer.is_global_zero:
            return
        if self.batch is None and self.noise is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            noise = None if self.noise is None else self.noise.to(pl_module.device)
            grids = pl_module.image_grids(noise, _to_device(self.batch, pl_module.device))
        pl_module.train(was_training)
        for name, images in grids.items():
            self.emit(trainer, name, images.float().clamp(0, 1).cpu(), epoch)

    def emit(self, trainer: L.Trainer, name: str, images: torch.Tensor, epoch: int) -> Path:
        """Save ``images`` (N, C, H, W) in [0, 1] as one PNG grid and send it to every image-capable logger."""
        grid = make_grid(images, nrow=self.nrow, padding=2, pad_value=1.0)  # (C, H', W')
        folder = Path(trainer.log_dir or trainer.default_root_dir) / self.subdir
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}_epoch{epoch:03d}.png"
        save_image(grid, path)
        self.saved.append(path)
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=f"images/{name}", images=[grid], step=trainer.global_step,
                                 caption=[f"epoch {epoch}"])
            elif isinstance(logger, TensorBoardLogger) or hasattr(getattr(logger, "experiment", None), "add_image"):
                # TensorBoard's SummaryWriter, or any logger whose experiment has the same add_image
                logger.experiment.add_image(f"images/{name}", grid, global_step=trainer.global_step)
        return path

    # ------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        return {"noise": self.noise, "seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.noise = state_dict.get("noise")
        self.seed = state_dict.get("seed", self.seed)
