"""Classification losses for imbalanced data: the multiclass focal loss and inverse-frequency class weights.

Usage:
    weight = balanced_class_weights(torch.tensor([900, 90, 10]))     # tensor([0.0297, 0.2970, 2.6733])
    loss = focal_loss(logits, target, gamma=2.0, weight=weight)     # target: class ids (B,) or probabilities (B, C)

Both follow ``F.cross_entropy``'s conventions, so ``focal_loss(..., gamma=0)`` *is* the cross-entropy: with class ids
the weighted mean divides by the summed weights of the targets; with probabilities (mixup) by the batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from zoo.errors import UserError


class ClassWeightsError(UserError, ValueError):
    """A ``class_weights`` option that cannot be used; the message says what to pass instead."""


def balanced_class_weights(counts: torch.Tensor) -> torch.Tensor:
    """Inverse class frequency, normalised to mean 1 over the classes that occur (sklearn's "balanced", rescaled).

    Args:
        counts: training examples per class (C,).

    Returns:
        float32 weights (C,); a class with no examples gets 0 (it is never a target, and an infinite weight would
        swamp the normalisation).
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    if counts.ndim != 1 or (counts < 0).any() or not (counts > 0).any():
        raise ValueError(f"Class counts must be a 1-D tensor of non-negative counts, some positive; got {counts}.")
    present = counts > 0
    inverse = torch.where(present, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    return (inverse * present.sum() / inverse.sum()).float()


def given_class_weights(class_weights: str | list[float], num_classes: int) -> torch.Tensor | None:
    """A classifier's ``class_weights`` option as a tensor (C,): None for "none" and for "balanced" (which needs the
    data, see ``balanced_class_weights``); raises on a wrong length or an unknown name."""
    if isinstance(class_weights, str):
        if class_weights not in ("none", "balanced"):
            raise ClassWeightsError(f"class_weights={class_weights!r}: choose 'none', 'balanced' or one float "
                                    "per class.")
        return None
    weight = torch.tensor(class_weights, dtype=torch.float32)
    if weight.shape != (num_classes,):
        raise ClassWeightsError(f"class_weights has {weight.numel()} values for {num_classes} classes; give one "
                                "per class.")
    return weight


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, weight: torch.Tensor | None = None,
               label_smoothing: float = 0.0) -> torch.Tensor:
    """Multiclass focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"), mean-reduced.

    Per example ``-sum_c alpha_c q_c (1 - p_c)^gamma log p_c``: ``p`` the softmax, ``q`` the (smoothed) target
    distribution, ``alpha`` the class weights. ``gamma`` > 0 shrinks the loss of well-classified examples (p -> 1),
    so training concentrates on the hard ones; ``gamma = 0`` gives ``F.cross_entropy`` exactly.

    Args:
        logits: (B, C) unnormalised scores.
        target: class ids (B,) or class probabilities (B, C) (soft targets, e.g. from mixup).
        gamma: focusing parameter (Lin et al. use 2).
        weight: per-class weights ``alpha`` (C,); None: all 1.
        label_smoothing: as ``F.cross_entropy``'s: the target becomes ``(1 - s) q + s / C``.

    Returns:
        The scalar loss (float32 even for half-precision logits).
    """
    num_classes = logits.shape[-1]
    log_p = F.log_softmax(logits.float(), dim=-1)  # (B, C)
    hard = target.ndim == 1
    q = F.one_hot(target, num_classes).float() if hard else target.float()
    if label_smoothing:
        q = q * (1 - label_smoothing) + label_smoothing / num_classes
    # Clamped away from 0: for gamma < 1 the power's gradient at a certain prediction (p = 1) is infinite.
    focus = (1 - log_p.exp()).clamp_min(1e-12).pow(gamma) if gamma else 1.0
    alpha = weight.float() if weight is not None else torch.ones(num_classes, device=logits.device)
    per_example = -(alpha * q * focus * log_p).sum(-1)  # (B,)
    if hard and weight is not None:  # F.cross_entropy's weighted mean: divide by the targets' summed weights
        return per_example.sum() / alpha[target].sum()
    return per_example.mean()
