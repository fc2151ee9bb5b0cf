"""MixUp (Zhang et al., 2018) and CutMix (Yun et al., 2019) in one callback, with soft targets.

Usage (YAML, stacked after a model config):
    zoo fit --config configs/cifar_cnn.yaml --config configs/callbacks/mixup.yaml
    trainer = L.Trainer(callbacks=[MixUpCutMix(mixup_alpha=0.2, cutmix_alpha=1.0)])

The maths is in pure functions (``soft_targets``, ``mixup``, ``cutmix_box``, ``cutmix``, ``mix_batch``); the callback
only draws the random numbers from its own numpy generator (saved in checkpoints, so a resumed run mixes as an unbroken
one would) and plugs into ``ImageClassifier.transform_train_batch``. Each image is mixed with its neighbour in the
(shuffled) batch, ``roll(1)`` as in torchvision's v2 MixUp/CutMix, so odd batch sizes work; timm's ``Mixup`` needs
even batches, and torchvision's has no label smoothing, probability or checkpointable RNG, hence our own ~40 lines.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F


def soft_targets(y: torch.Tensor, num_classes: int, smoothing: float = 0.0) -> torch.Tensor:
    """Class ids (B,) or probabilities (B, C) -> label-smoothed probabilities (B, C)."""
    p = F.one_hot(y, num_classes).float() if y.ndim == 1 else y.float()
    return p * (1 - smoothing) + smoothing / num_classes


def mixup(x: torch.Tensor, p: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``lam * sample + (1 - lam) * its neighbour`` for images (B, C, H, W) and probabilities (B, K)."""
    return lam * x + (1 - lam) * x.roll(1, 0), lam * p + (1 - lam) * p.roll(1, 0)


def cutmix_box(h: int, w: int, lam: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a box covering about ``1 - lam`` of an h x w image, centred uniformly at random
    and clipped at the border (so it may cover less)."""
    cy, cx = int(rng.integers(h)), int(rng.integers(w))
    r = (1 - lam) ** 0.5
    dh, dw = int(h * r) // 2, int(w * r) // 2
    return max(cy - dh, 0), min(cy + dh, h), max(cx - dw, 0), min(cx + dw, w)


def cutmix(x: torch.Tensor, p: torch.Tensor, box: tuple[int, int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Paste the neighbour's ``box`` into each image; targets weighted by the area actually pasted."""
    top, bottom, left, right = box
    mixed = x.clone()
    mixed[:, :, top:bottom, left:right] = x.roll(1, 0)[:, :, top:bottom, left:right]
    lam = 1 - (bottom - top) * (right - left) / (x.shape[-2] * x.shape[-1])
    return mixed, lam * p + (1 - lam) * p.roll(1, 0)


def mix_batch(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    rng: np.random.Generator,
    mixup_alpha: float = 0.2,
    cutmix_alpha: float = 1.0,
    prob: float = 1.0,
    switch_prob: float = 0.5,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch (images (B, C, H, W), class ids (B,) or probabilities (B, K)) -> (images, probabilities (B, K)).

    With probability ``prob`` the batch is mixed: by CutMix with probability ``switch_prob`` (when both alphas are
    positive), else by MixUp; the mixing weight is drawn from Beta(alpha, alpha). An alpha of 0 disables that kind.
    """
    p = soft_targets(y, num_classes, label_smoothing).to(x.dtype if x.is_floating_point() else torch.float32)
    kinds = [k for k, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if not kinds or len(x) < 2 or rng.random() >= prob:
        return x, p
    use_cutmix = kinds == ["cutmix"] or (len(kinds) == 2 and rng.random() < switch_prob)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    if use_cutmix:
        return cutmix(x, p, cutmix_box(x.shape[-2], x.shape[-1], lam, rng))
    return mixup(x, p, lam)


class MixUpCutMix(L.Callback):
    """Mixes each training batch (MixUp or CutMix) before ``training_step``; targets become probabilities.

    Needs a model with ``ImageClassifier``'s ``transform_train_batch`` hook; train accuracy is then logged against
    the dominant label. Set label smoothing here or on the model, not both (they would compound).

    Args:
        mixup_alpha: Beta(alpha, alpha) for MixUp's weight; 0 disables MixUp.
        cutmix_alpha: Beta(alpha, alpha) for CutMix's box area; 0 disables CutMix.
        prob: probability that a batch is mixed at all.
        switch_prob: probability of CutMix rather than MixUp when both are enabled.
        label_smoothing: smoothing of the (one-hot) targets before mixing.
        seed: seed of the callback's own generator (its state is saved in checkpoints).
    """

    def __init__(
        self,
        mixup_alpha: float = 0.2,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.0,
        seed: int = 0,
    ):
        if mixup_alpha < 0 or cutmix_alpha < 0 or not 0 <= prob <= 1 or not 0 <= switch_prob <= 1:
            raise ValueError("MixUpCutMix: alphas must be >= 0 and prob, switch_prob in [0, 1].")
        self.mixup_alpha, self.cutmix_alpha = mixup_alpha, cutmix_alpha
        self.prob, self.switch_prob, self.label_smoothing = prob, switch_prob, label_smoothing
        self.rng = np.random.default_rng(seed)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and not hasattr(pl_module, "transform_train_batch"):
            raise TypeError(f"MixUpCutMix needs a zoo ImageClassifier (transform_train_batch); got {type(pl_module)}.")

    def transform_batch(self, trainer: L.Trainer, pl_module: L.LightningModule, x: torch.Tensor, y: torch.Tensor):
        """Called by ``ImageClassifier.transform_train_batch`` on every training batch."""
        return mix_batch(x, y, pl_module.num_classes, self.rng, self.mixup_alpha, self.cutmix_alpha, self.prob,
                         self.switch_prob, self.label_smoothing)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}  # plain dict of str/int: loads with weights_only=True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state_dict["rng"]
