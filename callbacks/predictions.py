"""Print the top-k labels with probabilities for every image that ``zoo predict`` sees.

Usage:
    zoo predict --config configs/efficientnet_hymenoptera.yaml --ckpt_path best.ckpt \
        --data.init_args.predict_dir my_photos/ --trainer.callbacks+=PrintTopK
"""

from __future__ import annotations

import lightning as L
import torch


def format_topk(probs: torch.Tensor, labels: list[str], names: list[str], k: int) -> list[str]:
    """One line per row of ``probs`` (B, C): ``name: label p, label p, ...`` for the ``k`` most likely labels."""
    top = probs.float().topk(min(k, probs.shape[1]), dim=1)
    return [
        f"{name}: " + ", ".join(f"{labels[j]} {p:.3f}" for p, j in zip(ps.tolist(), js.tolist()))
        for name, ps, js in zip(names, top.values, top.indices)
    ]


class PrintTopK(L.Callback):
    """Prints ``k`` labels per image. Labels: the model's ``class_names`` hyperparameter (stored in its checkpoint),
    else the DataModule's ``classes``, else class ids. Image names: the batch's second item when it holds strings
    (ImageFolderDataModule's predict batches are ``(images, paths)``), else positions.

    Args:
        k: labels per image.
        limit: images printed at most (then a count of the rest); None prints all.
    """

    def __init__(self, k: int = 3, limit: int | None = 20):
        self.k, self.limit, self.printed = k, limit, 0

    def on_predict_start(self, trainer, pl_module) -> None:
        self.printed = 0

    def on_predict_end(self, trainer, pl_module) -> None:
        if self.limit is not None and self.printed > self.limit and trainer.is_global_zero:
            print(f"... and {self.printed - self.limit} more (PrintTopK's limit is {self.limit})")

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        probs = outputs  # (B, C) from predict_step
        labels = pl_module.hparams.get("class_names") or getattr(trainer.datamodule, "classes", None)
        labels = list(labels or range(probs.shape[1]))
        second = batch[1] if isinstance(batch, (tuple, list)) and len(batch) > 1 else None
        if isinstance(second, (list, tuple)) and second and isinstance(second[0], str):
            names = list(second)
        else:
            names = [f"#{batch_idx}.{i}" for i in range(len(probs))]
        lines = format_topk(probs, [str(x) for x in labels], names, self.k)
        shown = lines if self.limit is None else lines[: max(0, self.limit - self.printed)]
        self.printed += len(lines)
        if trainer.is_global_zero and shown:
            print("\n".join(shown), flush=True)
