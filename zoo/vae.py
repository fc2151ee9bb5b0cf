"""A convolutional (β-)VAE for MNIST-sized images, with a plain or denoising autoencoder as options.

Usage:
    model = zoo.get_model("vae")                     # or: zoo fit --config configs/vae_mnist.yaml
    images = model.sample(16)                        # (16, 1, 28, 28), Bernoulli means in [0, 1]
    recon = model.reconstruct(x)                     # x in [0, 1], (B, 1, 28, 28)
    path = model.interpolate(x[0], x[1], steps=8)    # decoded along the line between the two latent means
    mu, logvar = model.refine(x, *model.encode(x))   # the encoder's q(z|x), improved per image (see refine_steps)

The likelihood is a Bernoulli per pixel: exact for binarised MNIST, and the usual cross-entropy surrogate for
grey-level images in [0, 1] (as in Kingma & Welling's and pytorch/examples' MNIST VAEs). The loss is the negative
evidence lower bound, in nats per image, -ELBO = E_q[-log p(x|z)] + KL(q(z|x) || N(0, I)), also reported in bits per
dimension (nats / (pixels * ln 2)).

With ``refine_steps`` > 0 the test set is scored with semi-amortized inference (Kim et al. 2018, "Semi-Amortized
Variational Autoencoders"; Krishnan et al. 2018): each image's Gaussian q(z|x) starts at the encoder's output and
takes that many Adam steps on its own ELBO, the networks fixed. It is the same one-sample ELBO of the same model,
with a better q; ``test/nelbo_encoder`` reports the encoder's q alone next to it.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from zoo import register_model
from zoo.optim import OptimizerName, Schedule, configure_optimizers


def bernoulli_nll(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """-log p(x | logits) in nats per image (B,), summed over pixels; x in [0, 1]."""
    return F.binary_cross_entropy_with_logits(logits.float(), x.float(), reduction="none").flatten(1).sum(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in nats per image (B,)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)


def negative_elbo(logits, x, mu, logvar, beta: float = 1.0) -> dict[str, torch.Tensor]:
    """Batch means of the reconstruction NLL, the KL, the true -ELBO (β = 1) and the β-weighted training loss."""
    recon, kl = bernoulli_nll(logits, x).mean(), gaussian_kl(mu, logvar).mean()
    return {"recon": recon, "kl": kl, "nelbo": recon + kl, "loss": recon + beta * kl}


def bits_per_dim(nats_per_image: torch.Tensor, num_pixels: int) -> torch.Tensor:
    return nats_per_image / (num_pixels * math.log(2))


class Residual(nn.Sequential):
    """x + layers(x)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + super().forward(x)


def same_convs(width: int, depth: int, residual: bool = False) -> list[nn.Module]:
    """``depth`` 3x3 conv + ReLU layers that keep the resolution and the width; ``residual`` adds each one's input
    to its output (x + relu(conv(x))), so a deeper net starts close to the shallower one."""
    def layer() -> list[nn.Module]:
        conv_relu = (nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        return [Residual(*conv_relu)] if residual else list(conv_relu)

    return [m for _ in range(depth) for m in layer()]


class Encoder(nn.Module):
    """(B, C, S, S) -> (B, 2 * latent_dim): strided 4x4 convs halving the side each time (each followed by ``depth``
    3x3 convs at that resolution), then two linear layers."""

    def __init__(self, channels: int, image_size: int, widths: list[int], hidden: int, latent_dim: int,
                 depth: int = 0, residual: bool = False):
        super().__init__()
        layers, c = [], channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 4, stride=2, padding=1), nn.ReLU(inplace=True), *same_convs(w, depth, residual)]
            c = w
        side = image_size // 2 ** len(widths)  # 28 -> 14 -> 7
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * side * side, hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, 2 * latent_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """(B, latent_dim) -> logits (B, C, S, S): the encoder mirrored with 4x4 stride-2 transposed convs, each preceded
    by ``depth`` 3x3 convs at its input resolution."""

    def __init__(self, channels: int, image_size: int, widths: list[int], hidden: int, latent_dim: int,
                 depth: int = 0, residual: bool = False):
        super().__init__()
        self.side, self.width = image_size // 2 ** len(widths), widths[-1]
        self.fc = nn.Sequential(nn.Linear(latent_dim, hidden), nn.ReLU(inplace=True),
                                nn.Linear(hidden, self.width * self.side**2), nn.ReLU(inplace=True))
        layers, chans = [], [*reversed(widths), channels]
        for i, (a, b) in enumerate(itertools.pairwise(chans)):
            layers += [*same_convs(a, depth, residual), nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)]
            if i < len(chans) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, self.width, self.side, self.side)  # (B, 64, 7, 7)
        return self.net(h)


@register_model("vae", description="Convolutional β-VAE (or plain/denoising autoencoder), Bernoulli likelihood",
                tiny={"widths": [4, 8], "hidden": 16, "latent_dim": 4})
class VAE(L.LightningModule):
    """Convolutional VAE; ``beta`` != 1 gives a β-VAE, ``kind="ae"`` a plain autoencoder, ``noise_std`` > 0 a
    denoising one (the encoder sees x + N(0, noise_std²), clipped to [0, 1]; the loss scores the clean x).

    Inputs are images in [0, 1] (B, channels, image_size, image_size); batches ``(images, labels)`` or images.

    Args:
        latent_dim: size of z.
        widths: channels of the strided conv layers (each halves the side; image_size must divide by 2**len).
        hidden: width of the linear layer between the convs and z.
        depth: extra 3x3 conv layers at each resolution of the encoder and the decoder (0: the plain strided net).
        residual: each of those layers adds its input to its output (x + relu(conv(x))).
        beta: weight of the KL term in the training loss (reported -ELBO always uses 1).
        kind: "vae" (stochastic z, -ELBO) or "ae" (z = mean, reconstruction NLL only).
        noise_std: std of the Gaussian input corruption during training (denoising); 0 disables it.
        channels: image channels.
        image_size: image side in pixels.
        lr: learning rate (peak, with a schedule).
        optimizer: a ``zoo.optim`` name ("adam", "adamw", "radam", ...).
        schedule: learning rate per step: "constant", or "cosine"/"linear" decay to 0 over the run's steps, or
            "onecycle".
        refine_steps: Adam steps of per-image posterior refinement when testing (see ``refine``); 0: the encoder's
            q alone. Training and validation always use the encoder alone.
        refine_lr: learning rate of those steps.
        init_from: a ``zoo.load`` source (e.g. ``vae_mnist_long``) whose weights start training; unlike
            ``--ckpt_path`` it restores no optimizer, schedule or loop state (a second run from a trained net).
    """

    def __init__(
        self,
        latent_dim: int = 32,
        widths: list[int] = [32, 64],  # noqa: B006 - read-only; jsonargparse needs a literal default
        hidden: int = 512,
        depth: int = 0,
        residual: bool = False,
        beta: float = 1.0,
        kind: Literal["vae", "ae"] = "vae",
        noise_std: float = 0.0,
        channels: int = 1,
        image_size: int = 28,
        lr: float = 1e-3,
        optimizer: OptimizerName = "adam",
        schedule: Schedule = "constant",
        refine_steps: int = 0,
        refine_lr: float = 0.02,
        init_from: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["init_from"])  # a rebuilt checkpoint never re-fetches its starting point
        self.init_from = init_from
        if image_size % 2 ** len(widths):
            raise ValueError(f"image_size {image_size} must be divisible by 2**len(widths) = {2 ** len(widths)}.")
        self.encoder = Encoder(channels, image_size, list(widths), hidden, latent_dim, depth, residual)
        self.decoder = Decoder(channels, image_size, list(widths), hidden, latent_dim, depth, residual)
        self.latent_shape = (latent_dim,)  # for the ImageGrid callback's fixed noise
        self.num_pixels = channels * image_size * image_size

    def setup(self, stage: str) -> None:
        if self.init_from:  # before a --ckpt_path restore, which wins
            from zoo.hub import init_from

            init_from(self, self.init_from)
            self.init_from = None

    # ----------------------------------------------------------------------------------------------- inference
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, S, S) in [0, 1] -> posterior mean and log-variance, each (B, latent_dim)."""
        mu, logvar = self.encoder(x).chunk(2, dim=1)
        return mu, logvar.clamp(-30, 20)  # keeps exp(logvar) finite in fp16/bf16

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent_dim) -> Bernoulli logits (B, C, S, S)."""
        return self.decoder(z)

    def refine(self, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, steps: int | None = None,
               lr: float | None = None, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Semi-amortized inference: from the encoder's (mu, logvar) of images x, take ``steps`` (default
        ``refine_steps``) Adam steps on each image's mean and log-variance that lower its one-sample -ELBO, the
        networks fixed (no gradient reaches them). Works inside ``torch.inference_mode`` (Lightning's test loop).
        ``generator`` (CPU) draws the steps' z noise reproducibly. Returns the refined (mu, logvar)."""
        steps = self.hparams.refine_steps if steps is None else steps
        if not steps:
            return mu, logvar
        with torch.inference_mode(False), torch.enable_grad():
            x = x.clone()  # a normal tensor: inference-mode tensors cannot take part in autograd
            mu, logvar = (t.detach().clone().float().requires_grad_() for t in (mu, logvar))
            opt = torch.optim.Adam([mu, logvar], lr=self.hparams.refine_lr if lr is None else lr)
            for _ in range(steps):
                eps = torch.randn_like(mu) if generator is None else torch.randn(mu.shape, generator=generator).to(mu)
                z = mu + eps * torch.exp(0.5 * logvar)
                nelbo = bernoulli_nll(self.decode(z), x) + gaussian_kl(mu, logvar)  # per image: the sum separates
                mu.grad, logvar.grad = torch.autograd.grad(nelbo.sum(), [mu, logvar])
                opt.step()
        return mu.detach(), logvar.detach().clamp(-30, 20)

    def example_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random training batch: (4 images in [0, 1], labels)."""
        h = self.hparams
        return torch.rand(4, h.channels, h.image_size, h.image_size), torch.zeros(4, dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction (Bernoulli means in [0, 1]) from the posterior mean."""
        return self.reconstruct(x)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode(self.encode(x)[0]))

    @torch.no_grad()
    def sample(self, n: int, z: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` images (Bernoulli means) decoded from z ~ N(0, I), or from the given ``z`` (n, latent_dim)."""
        z = torch.randn(n, self.hparams.latent_dim, device=self.device) if z is None else z.to(self.device)
        return torch.sigmoid(self.decode(z))

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decode ``steps`` points on the line between the posterior means of images x_a and x_b (C, S, S)."""
        mu, _ = self.encode(torch.stack([x_a, x_b]).to(self.device))
        t = torch.linspace(0, 1, steps, device=self.device).unsqueeze(1)
        return torch.sigmoid(self.decode((1 - t) * mu[0] + t * mu[1]))  # (steps, C, S, S)

    def image_grids(self, noise: torch.Tensor | None, batch) -> dict[str, torch.Tensor]:
        """For the ImageGrid callback: samples from the fixed noise; inputs and reconstructions, row by row."""
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        row = min(8, len(x))  # alternate rows: `row` inputs, their reconstructions, the next inputs, ...
        x = x[: len(x) // row * row]
        recon = self.reconstruct(x)
        pairs = torch.stack([x.view(-1, row, *x.shape[1:]), recon.view(-1, row, *x.shape[1:])], 1)
        grids = {"reconstructions": pairs.flatten(0, 2)}  # (2 * len(x), C, S, S)
        if noise is not None and self.hparams.kind == "vae":
            grids["samples"] = self.sample(len(noise), noise)
        return grids

    # -------------------------------------------------------------------------------------------------- training
    def losses(self, x: torch.Tensor, corrupt: bool = False, generator: torch.Generator | None = None,
               posterior: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """Loss terms for a batch x in [0, 1]; z is sampled (reparameterised) for a VAE, the mean for an AE.

        ``generator`` (a CPU ``torch.Generator``) draws z's noise reproducibly; otherwise the global RNG does.
        ``posterior``: (mu, logvar) to score instead of the encoder's (e.g. from ``refine``).
        """
        inp = (x + self.hparams.noise_std * torch.randn_like(x)).clamp(0, 1) if corrupt else x
        mu, logvar = self.encode(inp) if posterior is None else posterior
        if self.hparams.kind == "ae":
            recon = bernoulli_nll(self.decode(mu), x).mean()
            return {"recon": recon, "loss": recon}
        eps = torch.randn_like(mu) if generator is None else torch.randn(mu.shape, generator=generator).to(mu)
        z = mu + eps * torch.exp(0.5 * logvar)
        return negative_elbo(self.decode(z), x, mu, logvar, self.hparams.beta)

    @staticmethod
    def _images(batch) -> torch.Tensor:
        return batch[0] if isinstance(batch, (list, tuple)) else batch

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        out = self.losses(self._images(batch), corrupt=self.hparams.noise_std > 0)
        self.log("train/loss", out["loss"], prog_bar=True)
        for k in ("recon", "kl"):
            if k in out:
                self.log(f"train/{k}", out[k])
        return out["loss"]

    def _evaluate(self, batch, batch_idx: int, stage: str) -> None:
        x = self._images(batch)
        # z's noise is seeded by batch and rank, so val/test numbers (and `zoo evaluate`) are reproducible
        seed, posterior = batch_idx * 1024 + self.global_rank, self.encode(x)
        out = self.losses(x, generator=torch.Generator().manual_seed(seed), posterior=posterior)
        n = len(x)
        if stage == "test" and self.hparams.refine_steps and self.hparams.kind == "vae":
            self.log("test/nelbo_encoder", out["nelbo"], sync_dist=True, batch_size=n)  # the encoder's q alone
            refined = self.refine(x, *posterior, generator=torch.Generator().manual_seed(seed + 2**30))
            out = self.losses(x, generator=torch.Generator().manual_seed(seed), posterior=refined)
        self.log(f"{stage}/recon", out["recon"], sync_dist=True, batch_size=n)
        if "nelbo" in out:  # a VAE's headline: -ELBO in nats per image, one z sample per image
            self.log(f"{stage}/nelbo", out["nelbo"], prog_bar=True, sync_dist=True, batch_size=n)
            self.log(f"{stage}/kl", out["kl"], sync_dist=True, batch_size=n)
            self.log(f"{stage}/bits_per_dim", bits_per_dim(out["nelbo"], self.num_pixels), sync_dist=True,
                     batch_size=n)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def predict_step(self, batch, batch_idx: int) -> dict:
        """Reconstructions (B, C, S, S) in [0, 1] (for ``zoo.callbacks.ImageWriter``: ``zoo predict`` writes PNGs)."""
        return {"images": self.reconstruct(self._images(batch)), "names": None}

    def configure_optimizers(self):
        return configure_optimizers(self, self.parameters())
