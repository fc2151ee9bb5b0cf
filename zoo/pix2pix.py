"""Pix2Pix (Isola et al., 2017): a U-Net generator and a 70x70 PatchGAN discriminator conditioned on the input.

Usage:
    model = zoo.get_model("pix2pix", image_size=128)  # or: zoo fit --config configs/pix2pix_people_cpu.yaml
    fake_b = model(a)                                  # (B, in_channels, S, S) in [-1, 1] -> (B, out_channels, S, S)

As in the paper and its reference code: the U-Net halves the side with 4x4 stride-2 convs down to 1x1
(``log2(image_size)`` levels, channels ``width * min(2**level, 8)``) and mirrors them with skip connections, dropout
0.5 in the decoder's wide inner levels, LeakyReLU(0.2) down, ReLU up, Tanh out; the discriminator judges
concatenated (A, B) pairs patch by patch. Loss: GAN (BCE-with-logits, so 16-mixed is safe) + ``lambda_l1`` * L1,
Adam 2e-4, beta1 0.5, one D and one G step per batch (manual optimization). Validation and test report L1, PSNR and
SSIM in [0, 1] next to a trivial baseline that outputs the input, so the numbers mean something.
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection

from zoo import register_model
from zoo.gan import discriminator_loss, gan_init, gan_optimizers, generator_loss
from zoo.metrics import image_metrics, to_unit


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.InstanceNorm2d(channels)


def unet_levels(image_size: int) -> int:
    levels = int(math.log2(image_size))
    if image_size < 32 or 2**levels != image_size:  # below 32 px the 70x70 PatchGAN has no patch left
        raise ValueError(f"pix2pix image_size must be a power of two >= 32 (e.g. 128, 256); got {image_size}.")
    return levels


class UNetGenerator(nn.Module):
    """(B, in_channels, S, S) -> (B, out_channels, S, S) in [-1, 1]; S = 2**levels, bottleneck 1x1."""

    def __init__(self, in_channels: int, out_channels: int, width: int, image_size: int, norm: str, dropout: float):
        super().__init__()
        n = unet_levels(image_size)
        c = [width * min(2**i, 8) for i in range(n)]  # channels after down-level i (256 px: 64, 128, 256, 512 x5)
        bias = norm == "instance"  # BatchNorm's shift makes a conv bias redundant
        self.downs = nn.ModuleList([nn.Conv2d(in_channels, c[0], 4, 2, 1)])
        for i in range(1, n):
            inner = i == n - 1  # the 1x1 bottleneck is not normalised
            self.downs.append(nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(c[i - 1], c[i], 4, 2, 1, bias=bias or inner),
                                            *([] if inner else [_norm(norm, c[i])])))
        self.ups = nn.ModuleList()
        for i in range(n - 1, 0, -1):  # up-level i: (c[i] from below (+ c[i] skip)) -> c[i - 1]
            c_in = c[i] if i == n - 1 else 2 * c[i]
            layers = [nn.ReLU(), nn.ConvTranspose2d(c_in, c[i - 1], 4, 2, 1, bias=bias), _norm(norm, c[i - 1])]
            if 4 <= i <= n - 2:  # the reference code's dropout levels (256 px: three, 128 px: two, 64 px: none)
                layers.append(nn.Dropout(dropout))
            self.ups.append(nn.Sequential(*layers))
        self.out = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * c[0], out_channels, 4, 2, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        x = skips.pop()  # (B, c[n-1], 1, 1)
        for up in self.ups:
            x = torch.cat([up(x), skips.pop()], 1)
        return self.out(x)


class PatchDiscriminator(nn.Module):
    """(A, B) pairs (B, in_channels + out_channels, S, S) -> a logit per 70x70 patch (B, 1, S/8 - 2, S/8 - 2)."""

    def __init__(self, channels: int, width: int, norm: str, layers: int = 3):
        super().__init__()
        bias = norm == "instance"
        seq, c = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)], width
        for k in range(1, layers + 1):
            c_out, stride = width * min(2**k, 8), 2 if k < layers else 1
            seq += [nn.Conv2d(c, c_out, 4, stride, 1, bias=bias), _norm(norm, c_out), nn.LeakyReLU(0.2)]
            c = c_out
        seq.append(nn.Conv2d(c, 1, 4, 1, 1))
        self.net = nn.Sequential(*seq)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([a, b], 1))


@register_model("pix2pix", description="Pix2Pix (Isola et al. 2017): U-Net + 70x70 PatchGAN, manual optimization",
                tiny={"image_size": 32, "gen_width": 4, "disc_width": 4})
class Pix2Pix(L.LightningModule):
    """Conditional GAN for paired image-to-image translation. Batches are ``(A, B[, names])`` in [-1, 1].

    Args:
        in_channels: channels of A (1 for grayscale or edge inputs).
        out_channels: channels of B.
        image_size: side of the training crops; a power of two >= 32 (the U-Net's depth follows it).
        gen_width: the U-Net's first-level channels (the paper: 64).
        disc_width: the PatchGAN's first-level channels (the paper: 64).
        norm: "batch" (the paper) or "instance".
        dropout: dropout in the U-Net's wide inner decoder levels (the paper's noise source).
        lambda_l1: weight of the L1 term in the generator loss (the paper: 100).
        lr: Adam's learning rate, both nets (the paper: 2e-4).
        beta1: Adam's beta1, both nets (the paper: 0.5).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        image_size: int = 256,
        gen_width: int = 64,
        disc_width: int = 64,
        norm: Literal["batch", "instance"] = "batch",
        dropout: float = 0.5,
        lambda_l1: float = 100.0,
        lr: float = 2e-4,
        beta1: float = 0.5,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = UNetGenerator(in_channels, out_channels, gen_width, image_size, norm, dropout)
        self.discriminator = PatchDiscriminator(in_channels + out_channels, disc_width, norm)
        self.generator.apply(gan_init)
        self.discriminator.apply(gan_init)
        self.val_metrics, self.val_baseline = image_metrics("val/"), image_metrics("val/baseline_")
        self.test_metrics, self.test_baseline = image_metrics("test/"), image_metrics("test/baseline_")
        self.example_input_array = torch.zeros(1, in_channels, image_size, image_size)

    # ----------------------------------------------------------------------------------------------- inference
    def example_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random training batch: (A, B) pairs of 2 images in [-1, 1]."""
        h = self.hparams
        size = (2, h.image_size, h.image_size)
        return torch.rand(size[0], h.in_channels, *size[1:]) * 2 - 1, torch.rand(size[0], h.out_channels, *size[1:]) * 2 - 1

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        """A (B, in_channels, H, W) in [-1, 1], H and W multiples of ``2**levels`` -> B in [-1, 1]."""
        return self.generator(a)

    def baseline(self, a: torch.Tensor) -> torch.Tensor:
        """The trivial translation: the input itself (a grey input repeated on every output channel)."""
        return a.expand(-1, self.hparams.out_channels, -1, -1) if a.shape[1] == 1 else a

    def image_grids(self, noise, batch) -> dict[str, torch.Tensor]:
        """For the ImageGrid callback: input | output | target triplets, one per grid cell group (nrow: 3k)."""
        a, b = batch[0], batch[1]
        show = lambda x: to_unit(x).expand(-1, 3, -1, -1) if x.shape[1] == 1 else to_unit(x)  # noqa: E731
        return {"translation": torch.stack([show(a), show(self(a)), show(b)], 1).flatten(0, 1)}

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule  # setup() is a Trainer hook
        channels = getattr(dm, "channels", None)
        if channels is not None and channels != (self.hparams.in_channels, self.hparams.out_channels):
            raise ValueError(
                f"The data gives A with {channels[0]} and B with {channels[1]} channels, but the model was built for "
                f"{self.hparams.in_channels} -> {self.hparams.out_channels}. Fix: set --model.in_channels "
                f"{channels[0]} --model.out_channels {channels[1]}.")

    # -------------------------------------------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> None:
        a, b = batch[0], batch[1]
        opt_g, opt_d = self.optimizers()
        fake = self.generator(a)

        # Discriminator step. `fake` is not detached: under DDP every backward must reach every parameter. The
        # generator's gradients from this loss are discarded (zero_grad below); its graph is kept for the G step.
        loss_d = 0.5 * discriminator_loss(self.discriminator(a, b), self.discriminator(a, fake))
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d, retain_graph=True)
        opt_d.step()

        # Generator step against the updated discriminator: fool it, and stay close to B in L1.
        loss_gan = generator_loss(self.discriminator(a, fake))
        loss_l1 = F.l1_loss(fake.float(), b.float())
        loss_g = loss_gan + self.hparams.lambda_l1 * loss_l1
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()

        self.log_dict({"train/loss_d": loss_d, "train/loss_g": loss_g}, prog_bar=True)
        self.log_dict({"train/loss_gan": loss_gan, "train/l1": loss_l1})

    def configure_optimizers(self):
        return gan_optimizers(self.generator, self.discriminator, self.hparams.lr, self.hparams.beta1)

    # ------------------------------------------------------------------------------------------------ evaluation
    def _evaluate(self, batch, model_metrics: MetricCollection, baseline_metrics: MetricCollection) -> None:
        a, b = batch[0], batch[1]
        target = to_unit(b)
        model_metrics.update(to_unit(self(a)), target)
        baseline_metrics.update(to_unit(self.baseline(a)), target)
        self.log_dict(model_metrics, prog_bar=True)
        self.log_dict(baseline_metrics)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, self.val_baseline)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, self.test_baseline)

    def predict_step(self, batch, batch_idx: int) -> dict:
        """Translated images in [0, 1] and, when the batch carries them, file names (for ``zoo.callbacks.ImageWriter``)."""
        a = batch[0] if isinstance(batch, (list, tuple)) else batch
        names = list(batch[2]) if isinstance(batch, (list, tuple)) and len(batch) > 2 else None
        return {"images": to_unit(self(a)), "names": names}
