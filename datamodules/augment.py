"""Automatic augmentation policies (RandAugment, TrivialAugment, AutoAugment, AugMix), per sample or batch-wise.

Usage:
    tf = policy_transform("randaugment")                         # per sample (PIL or uint8 tensor), in a Compose
    x = augment_batch(x_uint8, "randaugment", torch.Generator().manual_seed(7))   # (B, C, H, W), on any device

torchvision's v2 policies draw one op for the whole input, so on a batch every image would get the same op.
``augment_batch`` runs torchvision's own transform on each image in turn, each under torch's global RNG forked and
seeded from ``generator`` (public APIs only: the same ops and distributions as the per-sample transform, at the
cost of one call per image: 0.3-0.5 ms per 32x32 image, AugMix 1 ms, on one core of the 2-core AMD EPYC).

Randomness: ``augment_batch`` draws every random number from the ``generator`` it is given and leaves the global RNG
as it found it, so a DataModule that seeds it from (seed, rank, epoch, batch index) replays the same augmentation
after a resume. ``policy_transform`` is torchvision's own transform and draws from the global torch RNG (per
DataLoader worker), as the other per-sample transforms do.
"""

from __future__ import annotations

from typing import Literal

import torch
from torchvision.transforms import v2

Policy = Literal["none", "randaugment", "trivialaugment", "autoaugment", "augmix"]


def policy_transform(policy: Policy, autoaugment_policy: Literal["cifar10", "imagenet", "svhn"] = "imagenet",
                     ) -> v2.Transform | None:
    """torchvision's transform for ``policy`` with its paper defaults (None for "none"); AutoAugment uses
    ``autoaugment_policy``'s learned sub-policies."""
    if policy == "none":
        return None
    if policy == "randaugment":
        return v2.RandAugment()
    if policy == "trivialaugment":
        return v2.TrivialAugmentWide()
    if policy == "autoaugment":
        return v2.AutoAugment(v2.AutoAugmentPolicy(autoaugment_policy))
    if policy == "augmix":
        return v2.AugMix()
    raise ValueError(f"augment_policy must be one of none, randaugment, trivialaugment, autoaugment, augmix; "
                     f"got {policy!r}.")


def augment_batch(x: torch.Tensor, policy: Policy, generator: torch.Generator,
                  autoaugment_policy: Literal["cifar10", "imagenet", "svhn"] = "cifar10") -> torch.Tensor:
    """uint8 (B, C, H, W) -> uint8 (B, C, H, W): ``policy`` drawn independently for every image from ``generator``
    (a CPU generator; the ops run on ``x``'s device)."""
    tf = policy_transform(policy, autoaugment_policy)
    if tf is None or len(x) == 0:
        return x
    if x.dtype != torch.uint8:
        raise TypeError(f"augment_batch expects uint8 images; got {x.dtype}.")
    seeds = torch.randint(2**62, (len(x),), generator=generator).tolist()
    out = torch.empty_like(x)
    with torch.random.fork_rng(devices=[]):  # the policies draw from the global CPU RNG: seed it per image, restore
        for i, seed in enumerate(seeds):
            torch.manual_seed(seed)
            out[i] = tf(x[i])
    return out
