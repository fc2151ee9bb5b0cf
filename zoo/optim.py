"""The zoo's training recipe in one place: a named optimizer (timm's factory) and a per-step learning-rate schedule.

Usage:
    def configure_optimizers(self):              # in a model whose hparams hold the recipe's arguments
        return configure_optimizers(self, self.parameters())

A model's recipe arguments are plain constructor arguments (``lr``, ``weight_decay``, ``momentum``, ``optimizer``,
``schedule``, ``warmup``, ``lr_start``, ``lr_end``), so ``--model.lr 0.1`` works and Lightning's learning-rate finder
can set ``lr``. Parameter groups may carry ``lr_scale`` / ``wd_scale`` (multiples of the model's ``lr`` and
``weight_decay``); a group's own ``weight_decay`` (0 for norm layers) is kept.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Literal

import torch

OptimizerName = Literal["sgd", "momentum", "adam", "adamw", "radam", "ranger", "lamb", "rmsprop"]
Schedule = Literal["constant", "linear", "cosine", "flat_cosine", "onecycle"]
SchedulerInterval = Literal["epoch", "step"]

# The zoo's names -> timm.optim names ("sgd" is Nesterov SGD, as in timm; "ranger" = RAdam + Lookahead).
TIMM_NAMES = {"sgd": "sgd", "momentum": "momentum", "adam": "adam", "adamw": "adamw", "radam": "radam",
              "ranger": "lookahead_radam", "lamb": "lamb", "rmsprop": "rmsprop"}
SCHEDULES = ("constant", "linear", "cosine", "flat_cosine", "onecycle")
# torch's fused kernels (one pass over all tensors): on a CPU, Adam's step is several times faster than the default
# per-tensor loop (benchmarks/fused_optimizer.py); the other names have no fused version.
FUSED = {"sgd", "momentum", "adam", "adamw"}


def create_optimizer(params: Iterable, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                     betas: tuple[float, float] | None = None, fused: bool = True):
    """A timm optimizer (``timm.optim.create_optimizer_v2``) over ``params`` (tensors or parameter groups).

    Groups may hold ``lr_scale`` and ``wd_scale``: that group's LR and weight decay become multiples of ``lr`` and
    ``weight_decay`` (a group's explicit ``weight_decay`` is scaled the same way). ``fused``: torch's fused kernel
    where the optimizer has one (sgd, momentum, adam, adamw) and every tensor is a float on a CPU or CUDA device."""
    if name not in TIMM_NAMES:
        raise ValueError(f"Unknown optimizer {name!r}; choose one of {', '.join(TIMM_NAMES)}.")
    from timm.optim import create_optimizer_v2  # imported on use: `import zoo` stays light

    groups = list(params)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    for group in groups:
        params = group["params"]
        group["params"] = [params] if isinstance(params, torch.Tensor) else list(params)  # may be a generator
        group["lr"] = lr * group.get("lr_scale", 1.0)
        group["weight_decay"] = group.get("weight_decay", weight_decay) * group.get("wd_scale", 1.0)
    extra = {"momentum": momentum} if name in ("sgd", "momentum", "rmsprop") else {}
    if betas is not None and name not in ("sgd", "momentum", "rmsprop"):
        extra["betas"] = tuple(betas)
    tensors = [t for group in groups for t in group["params"]]
    if fused and name in FUSED and tensors and all(t.is_floating_point() and t.device.type in ("cpu", "cuda")
                                                   for t in tensors):
        extra["fused"] = True
    return create_optimizer_v2(groups, opt=TIMM_NAMES[name], lr=lr, weight_decay=weight_decay, **extra)


def warmup_decay(step: int, total: int, warmup: float, start: float, end: float, shape: str) -> float:
    """LR multiplier: linear ramp ``start -> 1`` over ``warmup * total`` steps, then ``1 -> end`` (linear or cosine),
    1 for the first half of the rest and cosine to ``end`` over the second ("flat_cosine", fast.ai's flat-then-anneal),
    or 1 throughout ("constant")."""
    if shape not in ("constant", "linear", "cosine", "flat_cosine"):
        raise ValueError(f"Unknown schedule shape {shape!r}; choose constant, linear, cosine or flat_cosine.")
    peak = int(warmup * total)
    if step < peak:
        return start + (1 - start) * step / peak
    t = min(1.0, (step - peak) / max(1, total - peak))
    if shape == "flat_cosine":
        shape, t = "cosine", max(0.0, 2 * t - 1)
    if shape == "cosine":
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * t))
    if shape == "linear":
        return 1 + (end - 1) * t
    return 1.0


def _trainer(module):
    """The Trainer ``module`` is being fitted by; None outside one (a hand-written loop)."""
    try:
        return module.trainer
    except RuntimeError:
        return None


def per_step_schedule(optimizer, module, warmup: float, start: float, end: float, shape: str) -> dict | None:
    """Lightning ``lr_scheduler`` config stepping every optimizer step over the run's length: ``warmup_decay`` for
    constant/linear/cosine, torch's ``OneCycleLR`` (peak = each group's LR, 30 % warm-up unless ``warmup``) for
    "onecycle". None when the LR is constant or the run has no length (bounded by time only). ``module`` may be
    outside a Trainer (a hand-written loop) only when the LR is constant."""
    if shape not in SCHEDULES:
        raise ValueError(f"Unknown schedule {shape!r}; choose one of {', '.join(SCHEDULES)}.")
    if shape == "constant" and warmup == 0:
        return None
    trainer = _trainer(module)
    if trainer is None:
        raise RuntimeError(f"The {shape!r} learning-rate schedule (warm-up {warmup}) needs the run's length from a "
                           "Trainer: call configure_optimizers() under Trainer.fit, or pass schedule='constant', "
                           "warmup=0 to use the model in your own loop.")
    if trainer.max_steps == -1 and trainer.max_epochs in (None, -1):
        return None  # bounded by time only: no length to schedule over
    if shape == "onecycle":  # OneCycleLR needs the length now: such a run resumes exactly only at an epoch boundary
        total = max(1, int(trainer.estimated_stepping_batches))
        peaks = [g["lr"] for g in optimizer.param_groups]
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total,
                                                        pct_start=warmup or 0.3, cycle_momentum=False)
        return {"scheduler": scheduler, "interval": "step"}
    # The run's length is read at the first scheduler step, not here: asking Lightning for it this early sets up the
    # training data before a resumed run restores its place in the epoch, which would replay the epoch's first batches.
    length: list[int] = []

    def multiplier(step: int) -> float:
        if step == 0 and not length:  # LambdaLR's call at construction: the value needs no length
            return start if warmup > 0 else 1.0
        if not length:
            length.append(max(1, int(trainer.estimated_stepping_batches)))
        return warmup_decay(step, length[0], warmup, start, end, shape)

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier), "interval": "step"}


def configure_optimizers(module, params: Iterable, scheduler=None, interval: str = "epoch") -> Any:
    """What a zoo model's ``configure_optimizers`` returns: the optimizer its hparams name over ``params`` and either
    ``scheduler`` (a user's ``LRSchedulerCallable``, stepped every ``interval``) or the built-in per-step schedule.

    Reads ``module.hparams``: optimizer, lr and, when present, schedule, weight_decay, momentum, betas, warmup,
    lr_start, lr_end."""
    h = module.hparams
    try:
        trainer = module.trainer
    except RuntimeError:  # not attached to a Trainer (e.g. a unit test calling configure_optimizers directly)
        trainer = None
    # Lightning's mixed-precision plugin refuses to clip the gradients of a fused optimizer (it unscales internally)
    clipping = trainer is not None and bool(trainer.gradient_clip_val) and "mixed" in str(trainer.precision)
    optimizer = create_optimizer(params, h.optimizer, h.lr, h.get("weight_decay", 0.0), h.get("momentum", 0.9),
                                 h.get("betas"), fused=not clipping)
    if scheduler is not None:
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler(optimizer), "interval": interval}}
    schedule = per_step_schedule(optimizer, module, h.get("warmup", 0.0), h.get("lr_start", 0.0),
                                 h.get("lr_end", 0.0), h.get("schedule", "constant"))
    return optimizer if schedule is None else {"optimizer": optimizer, "lr_scheduler": schedule}
