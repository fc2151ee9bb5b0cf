"""What the GANs share (zoo/gan.py): the losses."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.gan import discriminator_loss, generator_loss


def test_dcgan_losses_are_bce_with_logits():
    assert discriminator_loss(torch.zeros(4), torch.zeros(4)).item() == pytest.approx(2 * math.log(2))
    assert generator_loss(torch.zeros(4)).item() == pytest.approx(math.log(2))
    big = torch.full((2,), 1e4, dtype=torch.float16)  # logits that would overflow a sigmoid + log in fp16
    assert torch.isfinite(discriminator_loss(big, -big)) and torch.isfinite(generator_loss(-big))
