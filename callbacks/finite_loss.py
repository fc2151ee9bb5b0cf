"""Stop a run at the first NaN/Inf training loss, saying at which step and what the value was.

Usage: in every config of configs/ (and added by ``zoo fit`` when a config has none); or
    trainer = L.Trainer(callbacks=[FiniteLoss()])

Checked after every step on the loss ``training_step`` returned, or, for manual optimization (the GANs), on the
``train/*`` values it logged. The run stops with ``NonFiniteLossError`` (a ``FloatingPointError``; ``zoo fit`` prints it and exits 2); ``LastCheckpoint`` never overwrites
last.ckpt with a non-finite state, so ``--ckpt_path .../last.ckpt`` resumes from the last good step (lower the
learning rate or set ``trainer.gradient_clip_val`` first). Lightning itself skips the optimizer step of a batch whose
``training_step`` returns None, if you would rather drop such batches in a model of your own.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from zoo.errors import UserError


class NonFiniteLossError(UserError, FloatingPointError):
    """A training loss became NaN or infinite; the message names the step and the value."""


class FiniteLoss(L.Callback):
    """Raise ``FloatingPointError`` naming the step and the value when a training loss is not finite."""

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            values = {"loss": loss}
        else:  # manual optimization: what the step logged
            values = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
        for name, value in values.items():
            value = float(value.detach().float().mean()) if isinstance(value, torch.Tensor) else float(value)
            if not math.isfinite(value):
                raise NonFiniteLossError(
                    f"Training {name} is {value} at step {trainer.global_step} (epoch {trainer.current_epoch}, batch "
                    f"{batch_idx}); stopped. Resume from the last good last.ckpt with a lower lr or gradient_clip_val.")
