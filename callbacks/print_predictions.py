"""Print what ``predict`` returns, batch by batch: generated text as it is, tensors as nested lists.

Usage (a config's trainer callbacks; inert during fit/validate/test):
    - class_path: PrintPredictions
    # zoo predict --config configs/lstm_tinyshakespeare.yaml --ckpt_path last.ckpt
"""

from __future__ import annotations

import sys

import lightning as L
import torch


def format_prediction(prediction) -> str:
    """A string as is; a tensor as (nested) lists; a list/tuple item by item, one per line."""
    if isinstance(prediction, str):
        return prediction
    if isinstance(prediction, torch.Tensor):
        return str(prediction.tolist())
    if isinstance(prediction, (list, tuple)):
        return "\n".join(format_prediction(p) for p in prediction)
    return str(prediction)


class PrintPredictions(L.Callback):
    """Writes each predict batch's output to stdout (global rank 0 only), followed by ``separator``.

    Args:
        separator: a line printed after each batch's output.
    """

    def __init__(self, separator: str = "-" * 80):
        self.separator = separator

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.is_global_zero:
            print(format_prediction(outputs), self.separator, sep="\n", file=sys.stdout, flush=True)
