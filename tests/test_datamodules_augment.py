"""Batch-wise augmentation policies (datamodules/augment.py): per-image draws of torchvision's policies, seeded."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from zoo.datamodules.augment import augment_batch, policy_transform

POLICIES = ["randaugment", "trivialaugment", "autoaugment", "augmix"]


def images(n: int = 24, channels: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, 32, 32), dtype=torch.uint8, generator=g)


@pytest.mark.parametrize("policy", POLICIES)
def test_each_image_gets_its_own_draw(policy):
    """torchvision's policies apply one op to a whole batch; here 24 copies of one image come out varied."""
    same = images(1).expand(24, -1, -1, -1).contiguous()
    out = augment_batch(same, policy, torch.Generator().manual_seed(0))
    assert out.shape == same.shape and out.dtype == torch.uint8
    distinct = len({bytes(im.flatten().tolist()) for im in out})
    assert distinct >= 8, distinct  # one draw for the batch would give 1


@pytest.mark.parametrize("policy", POLICIES)
def test_seeded_by_its_generator_not_the_global_rng(policy):
    x = images()
    torch.manual_seed(1)
    a = augment_batch(x, policy, torch.Generator().manual_seed(5))
    torch.manual_seed(2)
    b = augment_batch(x, policy, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    assert not torch.equal(a, augment_batch(x, policy, torch.Generator().manual_seed(6)))


@pytest.mark.parametrize("policy", POLICIES)
def test_each_image_is_torchvisions_policy_under_its_own_seed(policy):
    """Image i is exactly torchvision's transform applied alone, with the global RNG seeded by the i-th draw of the
    generator; the caller's global RNG is left as it was."""
    x = images(6)
    torch.manual_seed(11)
    before = torch.get_rng_state()
    out = augment_batch(x, policy, torch.Generator().manual_seed(3))
    assert torch.equal(torch.get_rng_state(), before)
    tf = policy_transform(policy, "cifar10")
    seeds = torch.randint(2**62, (6,), generator=torch.Generator().manual_seed(3)).tolist()
    for i, seed in enumerate(seeds):
        torch.manual_seed(seed)
        assert torch.equal(out[i], tf(x[i]))


def test_augmix_keeps_range_and_grey_images_work():
    x = images(16, channels=1)
    for policy in ("randaugment", "trivialaugment", "augmix"):  # the MNIST DataModule's choices
        out = augment_batch(x, policy, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == torch.uint8


def test_none_and_bad_input():
    x = images(4)
    assert augment_batch(x, "none", torch.Generator()) is x
    with pytest.raises(TypeError, match="uint8"):
        augment_batch(x.float(), "randaugment", torch.Generator())
    assert policy_transform("none") is None
    assert isinstance(policy_transform("autoaugment"), v2.AutoAugment)
