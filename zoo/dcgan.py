"""DCGAN (Radford, Metz & Chintala, 2016) for small grey or colour images, and a Fréchet distance on any features.

Usage:
    model = zoo.get_model("dcgan")                   # or: zoo fit --config configs/dcgan_fashion_mnist.yaml
    images = model.sample(64)                        # (64, 1, 32, 32) in [-1, 1]
    fd = frechet_distance(features, real_batches, fake_batches)

The paper's guidelines: strided (transposed) convolutions and no pooling; BatchNorm in both nets except the
generator's output and the discriminator's input layer, with bias-free convs before it; ReLU in the generator with a
Tanh output; LeakyReLU(0.2) in the discriminator; weights from N(0, 0.02); Adam at 2e-4 with beta1 = 0.5.
Training alternates one discriminator and one generator step per batch (manual optimization: Lightning 2 has no
``optimizer_idx``); losses are BCE-with-logits, so autocast (16-mixed, bf16-mixed) is safe.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance

from zoo import register_model
from zoo.gan import discriminator_loss, gan_init, gan_optimizers, generator_loss
from zoo.metrics import PenultimateFeatures, frechet_metric


def _num_doublings(image_size: int) -> int:
    n = int(math.log2(image_size)) - 2
    if image_size < 16 or 2 ** (n + 2) != image_size:
        raise ValueError(f"DCGAN image_size must be a power of two >= 16 (e.g. 32, 64); got {image_size}.")
    return n


class Generator(nn.Module):
    """z (B, latent_dim, 1, 1) -> images (B, C, S, S) in [-1, 1]: a 4x4 projection, then stride-2 transposed convs
    halving the channels as they double the side (32 px: 256 -> 128 -> 64 -> C with width 64)."""

    def __init__(self, latent_dim: int, width: int, channels: int, image_size: int):
        super().__init__()
        n = _num_doublings(image_size)
        c = width * 2 ** (n - 1)
        layers = [nn.ConvTranspose2d(latent_dim, c, 4, 1, 0, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]  # (B,c,4,4)
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Discriminator(nn.Module):
    """Images (B, C, S, S) -> logits (B,): stride-2 convs doubling the channels (no BatchNorm on the first), then a
    4x4 valid conv to one logit."""

    def __init__(self, width: int, channels: int, image_size: int):
        super().__init__()
        n = _num_doublings(image_size)
        layers, c = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True)], width
        for _ in range(n - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers.append(nn.Conv2d(c, 1, 4, 1, 0))  # (B, 1, 1, 1)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten()


# ------------------------------------------------------------------------------------------------------- model
@register_model("dcgan", description="DCGAN (Radford et al. 2016) for 32/64-px images, manual optimization",
                tiny={"gen_width": 8, "disc_width": 8})
class DCGAN(L.LightningModule):
    """DCGAN with the paper's architecture, initialisation and optimizer; images in [-1, 1].

    Batches are ``(images, labels)`` or images (B, channels, image_size, image_size) in [-1, 1].

    Args:
        latent_dim: size of z.
        gen_width: channels of the generator's last hidden layer (doubled at each coarser scale).
        disc_width: channels of the discriminator's first layer (doubled at each coarser scale).
        channels: image channels.
        image_size: image side in pixels; a power of two >= 16.
        real_label: D's target for real images (< 1: one-sided label smoothing; the paper uses 1).
        fd_features: a classifier trained on the same data, value range and size (any ``zoo.load`` source, e.g.
            ``cifar_cnn_fashion_mnist``); when set, ``test`` reports Fréchet distances on its penultimate features
            (``attach_features`` overrides it).
        fd_seed: seed of the generated images in ``test``, so the reported distances are reproducible.
        lr: Adam's learning rate, both nets (the paper: 2e-4).
        beta1: Adam's beta1, both nets (the paper: 0.5).
    """

    def __init__(
        self,
        latent_dim: int = 100,
        gen_width: int = 64,
        disc_width: int = 64,
        channels: int = 1,
        image_size: int = 32,
        real_label: float = 1.0,
        fd_features: str | None = None,
        fd_seed: int = 0,
        lr: float = 2e-4,
        beta1: float = 0.5,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = Generator(latent_dim, gen_width, channels, image_size)
        self.discriminator = Discriminator(disc_width, channels, image_size)
        self.generator.apply(gan_init)
        self.discriminator.apply(gan_init)
        self.latent_shape = (latent_dim, 1, 1)  # for the ImageGrid callback's fixed noise
        self.example_input_array = torch.zeros(2, latent_dim)
        self._features: nn.Module | None = None  # set by attach_features(); kept out of the state dict
        self._fd: dict[str, FrechetInceptionDistance] = {}
        self._test_noise: torch.Generator | None = None  # seeded in on_test_start

    # ----------------------------------------------------------------------------------------------- inference
    def example_batch(self) -> tuple[torch.Tensor]:
        """A random training batch: (4 images in [-1, 1],)."""
        h = self.hparams
        return (torch.rand(4, h.channels, h.image_size, h.image_size) * 2 - 1,)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent_dim[, 1, 1]) -> images (B, C, S, S) in [-1, 1]."""
        return self.generator(z.view(len(z), -1, 1, 1))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images in [-1, 1]; ``generator`` (a CPU ``torch.Generator``) makes the draw reproducible."""
        z = torch.randn(n, self.hparams.latent_dim, 1, 1, generator=generator)
        return self(z.to(self.device))

    def predict_step(self, batch, batch_idx: int) -> dict:
        """As many generated images as the batch holds, in [0, 1], seeded by the batch index (``zoo predict`` with
        ``zoo.callbacks.ImageWriter`` writes them as PNGs)."""
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        samples = self.sample(len(real), torch.Generator().manual_seed(self.hparams.fd_seed + batch_idx))
        return {"images": (samples + 1) / 2, "names": None}

    def image_grids(self, noise: torch.Tensor | None, batch) -> dict[str, torch.Tensor]:
        """For the ImageGrid callback: the generator's images of the fixed noise, mapped to [0, 1]."""
        z = noise if noise is not None else torch.randn(64, *self.latent_shape, device=self.device)
        return {"samples": (self(z) + 1) / 2}

    # -------------------------------------------------------------------------------------------------- training
    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        opt_g, opt_d = self.optimizers()
        # The noise of the whole global batch from a generator seeded by the step; this process takes the rows of its
        # images (DDP deals them out in turn), so N processes at B/N train as 1 at B, and a resumed run draws the same.
        world, rank = self.trainer.world_size, self.trainer.global_rank
        generator = torch.Generator().manual_seed(torch.initial_seed() + self.global_step)
        z = torch.randn(len(real) * world, self.hparams.latent_dim, 1, 1, generator=generator)[rank::world]
        z = z.to(real.device, real.dtype)
        fake = self.generator(z)

        # Discriminator step. `fake` is not detached: under DDP (find_unused_parameters=False) every backward must
        # reach every parameter, or the reducer waits for gradients that never come. The generator's gradients from
        # this loss are discarded (opt_g.zero_grad below) and its graph is kept for the generator step.
        loss_d = discriminator_loss(self.discriminator(real), self.discriminator(fake), self.hparams.real_label)
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(loss_d, retain_graph=True)
        opt_d.step()

        # Generator step against the updated discriminator (non-saturating loss); D's gradients here are discarded.
        fake_logits = self.discriminator(fake)
        loss_g = generator_loss(fake_logits)
        opt_g.zero_grad(set_to_none=True)
        self.manual_backward(loss_g)
        opt_g.step()

        self.log_dict({"train/loss_d": loss_d, "train/loss_g": loss_g}, prog_bar=True)
        self.log("train/d_fake_prob", torch.sigmoid(fake_logits.detach().float()).mean())

    def configure_optimizers(self):
        return gan_optimizers(self.generator, self.discriminator, self.hparams.lr, self.hparams.beta1)

    # ------------------------------------------------------------------------------------------------ evaluation
    def card_info(self) -> dict:
        """What ``zoo export`` adds to the model card: how the Fréchet distances are computed."""
        if not self.hparams.fd_features:
            return {}
        return {"frechet_distance": (
            f"torchmetrics' FID formula on the penultimate-layer features of the classifier {self.hparams.fd_features} "
            "(not Inception-v3, whose weights cannot be had offline), so the values are not comparable with published "
            "FIDs. Test set: even batches are the reference; test/frechet_distance compares them with as many "
            f"generated images (seed {self.hparams.fd_seed}), test/frechet_distance_floor with the odd real batches."
        )}

    def attach_features(self, features: nn.Module) -> None:
        """Use ``features`` (images in the model's [-1, 1] range -> (B, D), with ``num_features``) for the Fréchet
        distances of ``trainer.test``; e.g. ``PenultimateFeatures(classifier trained on the same data module)``."""
        # object.__setattr__ bypasses nn.Module's registration: the extractor is not saved with the GAN.
        object.__setattr__(self, "_features", features.eval().requires_grad_(False))

    def on_test_start(self) -> None:
        if self._features is None and self.hparams.fd_features:
            from zoo.hub import load

            self.attach_features(PenultimateFeatures(load(self.hparams.fd_features)))
        self._test_noise = torch.Generator().manual_seed(self.hparams.fd_seed + self.global_rank)
        if self._features is not None:
            features = self._features.to(self.device)
            self._fd = {k: frechet_metric(features).to(self.device) for k in ("model", "floor")}

    def _discriminator_probs(self, stage: str, real: torch.Tensor, fake: torch.Tensor) -> None:
        self.log(f"{stage}/d_real_prob", torch.sigmoid(self.discriminator(real).float()).mean(), sync_dist=True)
        self.log(f"{stage}/d_fake_prob", torch.sigmoid(self.discriminator(fake).float()).mean(), sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        """D's mean output on held-out real images and as many generated ones (a GAN's losses say little more)."""
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        self._discriminator_probs("val", real, self.sample(len(real)))

    def test_step(self, batch, batch_idx: int) -> None:
        """D's mean output on real and generated test-size batches; with features attached, two Fréchet distances
        at equal sizes: even test batches (reference) vs as many generated images (``test/frechet_distance``), and
        vs the odd test batches (``test/frechet_distance_floor``, the real-vs-real floor)."""
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        fake = self.sample(len(real), self._test_noise)
        self._discriminator_probs("test", real, fake)
        if not self._fd:
            return
        if batch_idx % 2 == 0:
            self._fd["model"].update(real, real=True)
            self._fd["floor"].update(real, real=True)
        else:
            self._fd["model"].update(fake, real=False)
            self._fd["floor"].update(real, real=False)

    def on_test_epoch_end(self) -> None:
        if self._fd:
            self.log("test/frechet_distance", self._fd["model"].compute())
            self.log("test/frechet_distance_floor", self._fd["floor"].compute())
            self._fd = {}
