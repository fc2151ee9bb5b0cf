"""Pseudo-labels (Lee 2013; noisy student, Xie et al. 2020): a teacher labels a DataModule's unlabelled images, and
a student trains on the labelled ones plus those labels.

Usage:
    zoo pseudo-label cifar_resnet_cifar10 --labelled 4000 --out pseudo.safetensors          # the teacher's labels
    zoo fit --config configs/cifar_cnn.yaml --data.init_args.labelled 4000 \
        --data.init_args.pseudo_labels pseudo.safetensors --data.init_args.pseudo_threshold 0.9   # the student

The file is safetensors with ``indices`` int64 (M,), positions in the DataModule's decoded training array, and
``probs`` float32 (M, C), the teacher's class probabilities (its test-time augmentation included).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from zoo.errors import UserError


class PseudoLabelsError(UserError, ValueError):
    """A ``pseudo_labels`` file that is missing, malformed or made for other data settings."""


@torch.no_grad()
def write_pseudo_labels(teacher, loader, path: Path) -> dict[str, torch.Tensor]:
    """Run ``teacher`` (a zoo classifier; its ``predict_logits`` applies its TTA) over ``loader``'s
    ``(images, indices)`` batches and write their indices and class probabilities to ``path``, atomically."""
    from safetensors.torch import save_file

    from zoo.hub import write_atomic

    teacher.eval()
    indices, probs = [], []
    for x, idx in loader:
        probs.append(teacher.predict_logits(x.to(teacher.device)).float().softmax(-1).cpu())
        indices.append(idx)
    tensors = {"indices": torch.cat(indices).long(), "probs": torch.cat(probs).contiguous()}
    write_atomic(Path(path), lambda tmp: save_file(tensors, str(tmp)))
    return tensors


def read_pseudo_labels(path: str | Path, unlabelled: torch.Tensor, num_classes: int, threshold: float = 0.0,
                       hard: bool = False, settings: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """The teacher's (indices (M,), targets (M, C) float) from ``path``, checked against the ``unlabelled`` pool
    (indices elsewhere would leak labelled or validation images: refused, naming the data ``settings``), without
    those whose largest probability is below ``threshold``; ``hard``: one-hot argmax targets."""
    from safetensors.torch import load_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise PseudoLabelsError(f"No pseudo-label file {path}; write it with `zoo pseudo-label TEACHER --out {path}`.")
    tensors = load_file(str(path))
    indices, probs = tensors.get("indices"), tensors.get("probs")
    if indices is None or probs is None or indices.ndim != 1 or probs.shape != (len(indices), num_classes):
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        raise PseudoLabelsError(f"{path}: expected 'indices' (M,) and 'probs' (M, {num_classes}); got {shapes}.")
    indices, probs = indices.long(), probs.float()
    stray = ~torch.isin(indices, unlabelled)
    if stray.any():
        raise PseudoLabelsError(
            f"{path}: {int(stray.sum())} indices (first {indices[stray][:5].tolist()}) are not in the unlabelled "
            f"pool of {settings or 'these data settings'}; run the teacher with the same data settings.")
    if len(indices.unique()) != len(indices):
        raise PseudoLabelsError(f"{path}: some indices appear twice; write one row per unlabelled image.")
    confident = probs.max(1).values >= threshold
    indices, probs = indices[confident], probs[confident]
    if hard:
        probs = F.one_hot(probs.argmax(1), num_classes).float()
    return indices, probs
