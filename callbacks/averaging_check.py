"""A warning when EarlyStopping can end training before weight averaging has any effect.

Usage: in ``configs/callbacks/early_stopping.yaml``, next to EarlyStopping; or
    trainer = L.Trainer(callbacks=[EarlyStopping("val/acc", mode="max"), EMAWeightAveraging(), AveragingCheck()])

Lightning's ``StochasticWeightAveraging`` only copies its average into the model (and recomputes BatchNorm
statistics) when training reaches ``max_epochs``: any earlier stop keeps the last, un-averaged weights.
``WeightAveraging``/``EMAWeightAveraging`` copy their average in at the end of training, but if no update happened
yet that "average" is the model's initial weights. Both failures are silent, hence this check.
"""

from __future__ import annotations

import math
import warnings

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping, StochasticWeightAveraging, WeightAveraging


def earliest_stop_epoch(patience: int, check_every_n_epoch: int = 1, min_epochs: int = 0,
                        has_threshold: bool = False) -> int:
    """0-based epoch at whose end EarlyStopping can first stop: the first check sets the best score, so
    ``patience`` more checks are needed (a stopping/divergence threshold can stop at the first check)."""
    checks = 1 if has_threshold else patience + 1
    return max(checks * check_every_n_epoch, min_epochs) - 1


def first_update_step(should_update, total_steps: int) -> int | None:
    """First 0-based optimizer step at which a WeightAveraging ``should_update(step_idx=...)`` says yes."""
    return next((s for s in range(total_steps) if should_update(step_idx=s)), None)


class AveragingCheck(L.Callback):
    """Warns at train start when an EarlyStopping callback can stop before SWA/EMA averaging takes effect."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stoppers = [cb for cb in trainer.callbacks if isinstance(cb, EarlyStopping)]
        if not stoppers or trainer.max_epochs in (None, -1):
            return
        stop = min(
            earliest_stop_epoch(cb.patience, trainer.check_val_every_n_epoch or 1, trainer.min_epochs or 0,
                                cb.stopping_threshold is not None or cb.divergence_threshold is not None)
            for cb in stoppers
        )
        last = trainer.max_epochs - 1
        for cb in trainer.callbacks:
            if isinstance(cb, StochasticWeightAveraging) and stop < last:
                warnings.warn(
                    f"EarlyStopping can stop after epoch {stop}, but StochasticWeightAveraging only puts its average "
                    f"into the model when training reaches max_epochs={trainer.max_epochs}; an early stop keeps the "
                    "un-averaged weights. Raise EarlyStopping's patience or drop one of the two."
                )
            elif isinstance(cb, WeightAveraging):
                per_epoch = trainer.num_training_batches / max(1, trainer.accumulate_grad_batches)
                if not math.isfinite(per_epoch):
                    continue
                per_epoch = max(1, math.ceil(per_epoch))
                first = first_update_step(cb.should_update, per_epoch * trainer.max_epochs)
                start = trainer.max_epochs if first is None else first // per_epoch
                if stop < start:
                    when = f"epoch {start}" if first is not None else f"never within max_epochs={trainer.max_epochs}"
                    warnings.warn(
                        f"EarlyStopping can stop after epoch {stop}, before {type(cb).__name__} first updates its "
                        f"average ({when}); the model would then end with its initial weights. Start the "
                        "averaging earlier or raise EarlyStopping's patience."
                    )
