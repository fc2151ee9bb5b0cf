"""What the zoo's GANs (DCGAN, Pix2Pix) share: the papers' weight init, BCE-with-logits losses and optimizers.

Usage:
    generator.apply(gan_init)
    loss_d = discriminator_loss(disc(real), disc(fake)); loss_g = generator_loss(disc(fake))
    opt_g, opt_d = gan_optimizers(generator, discriminator, lr=2e-4, beta1=0.5)

Losses take logits (BCE-with-logits computed in fp32), so autocast (16-mixed, bf16-mixed) is safe.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.optim import create_optimizer


def gan_init(module: nn.Module) -> None:
    """N(0, 0.02) conv weights; BatchNorm scales N(1, 0.02) and zero shifts (DCGAN's paper, pix2pix's reference code)."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, real_label: float = 1.0) -> torch.Tensor:
    """BCE of D on real images (target ``real_label``, < 1 for one-sided label smoothing) plus fakes (target 0)."""
    real_logits, fake_logits = real_logits.float(), fake_logits.float()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.full_like(real_logits, real_label))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """The non-saturating generator loss: -log D(G(z)), as BCE against the 'real' label."""
    fake_logits = fake_logits.float()
    return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))


def gan_optimizers(generator: nn.Module, discriminator: nn.Module, lr: float, beta1: float) -> list:
    """[generator's, discriminator's] Adam at ``lr`` with betas (``beta1``, 0.999): both papers use 2e-4 and 0.5."""
    return [create_optimizer(net.parameters(), "adam", lr, 0.0, betas=(beta1, 0.999))
            for net in (generator, discriminator)]
