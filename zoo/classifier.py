"""Training, evaluation and prediction shared by the zoo's image classifiers.

A subclass declares only its own constructor arguments, passes the rest on (``**kwargs``: the classification
settings below are declared here, once, and LightningCLI follows ``**kwargs`` to this signature) and builds
``self.net`` (normalised images in, logits out). Everything else (loss with hard or soft targets, metrics,
flip/translate test-time augmentation, optimizer groups and the learning-rate schedule) lives here.

Usage:
    class MyNet(ImageClassifier):
        def __init__(self, width: int = 64, **kwargs):
            super().__init__(**kwargs)
            self.net = ...
"""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from zoo.optim import OptimizerName, Schedule, SchedulerInterval, configure_optimizers

# Layers whose parameters get no weight decay (public classes; subclasses such as timm's BatchNormAct2d match).
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def tta_logits(net: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """Test-time augmentation. 0: plain; 1: mean with the mirror image; 2: also 1-pixel translations (airbench)."""
    if level == 0:
        return net(x)
    mirror = lambda v: 0.5 * (net(v) + net(v.flip(-1)))  # noqa: E731
    logits = mirror(x)
    if level == 1:
        return logits
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [mirror(padded[..., :h, :w]), mirror(padded[..., 2 : h + 2, 2 : w + 2])]
    return 0.5 * logits + 0.25 * (shifted[0] + shifted[1])


class ImageClassifier(L.LightningModule):
    """Base of the zoo's classifiers. Batches are ``(images, targets)``; targets are class ids (B,) or
    probabilities (B, num_classes), e.g. from the mixup callback.

    Callbacks reach training through two public hooks, ``transform_train_batch`` (mixup/cutmix) and
    ``training_loss`` (distillation); a callback opts in by defining ``transform_batch`` or ``training_loss``.

    Args:
        num_classes: output classes.
        lr: peak learning rate (what Lightning's learning-rate finder sets).
        weight_decay: weight decay of the non-normalisation parameters.
        momentum: momentum of the SGD-family optimizers.
        optimizer: "sgd" (Nesterov), "momentum", "adam", "adamw", "radam", "ranger" (RAdam + Lookahead), "lamb",
            "rmsprop", built by ``timm.optim``; norm-layer parameters get no weight decay.
        label_smoothing: cross-entropy label smoothing.
        tta: test-time augmentation level for test/predict (0 none, 1 flip, 2 flip + translate).
        channels_last: keep activations in channels-last memory format.
        scheduler: called with the optimizer, stepped every ``scheduler_interval``. Overrides ``schedule``.
        scheduler_interval: "epoch" or "step", for ``scheduler``.
        schedule: built-in per-step schedule when ``scheduler`` is None: "constant", "linear" or "cosine" decay
            after the warm-up, or "onecycle" (torch's OneCycleLR).
        warmup: fraction of the steps spent ramping the learning rate up from ``lr_start`` (a multiplier).
        lr_start: LR multiplier at step 0.
        lr_end: LR multiplier at the last step.
        no_decay_lr_scale: LR multiplier for norm and bias parameters (airbench trains BN biases much faster).
        init_from: a ``zoo.load`` source whose weights start training (weights only; a differently sized head is
            re-initialised with a warning). Unlike ``--ckpt_path`` it restores no optimizer or loop state.
    """

    def __init__(
        self,
        num_classes: int = 10,
        lr: float = 0.05,
        weight_decay: float = 5e-4,
        momentum: float = 0.9,
        optimizer: OptimizerName = "sgd",
        label_smoothing: float = 0.0,
        tta: Literal[0, 1, 2] = 0,
        channels_last: bool = False,
        scheduler: LRSchedulerCallable | None = None,
        scheduler_interval: SchedulerInterval = "epoch",
        schedule: Schedule = "cosine",
        warmup: float = 0.0,
        lr_start: float = 0.0,
        lr_end: float = 0.0,
        no_decay_lr_scale: float = 1.0,
        init_from: str | None = None,
    ):
        super().__init__()
        # Saves the subclass's arguments too (Lightning collects the whole __init__ chain), so subclasses never call it.
        self.save_hyperparameters(ignore=["scheduler", "init_from"])
        self.num_classes = num_classes
        self.init_from = init_from
        self.scheduler_factory = scheduler
        metric = lambda: MulticlassAccuracy(num_classes=num_classes, average="micro")  # noqa: E731
        self.train_acc, self.val_acc, self.test_acc = metric(), metric(), metric()

    @classmethod
    def from_pretrained(cls, source: str, **overrides):
        """``zoo.load(source, **overrides)``, checked to be an instance of this class."""
        from zoo.hub import load

        model = load(source, **overrides)
        if not isinstance(model, cls):
            raise TypeError(f"{source} holds a {type(model).__name__}, not a {cls.__name__}.")
        return model

    def setup(self, stage: str) -> None:
        if self.init_from:  # any stage (e.g. `zoo predict --model.init_from NAME`); a --ckpt_path restore comes after
            from zoo.hub import init_from

            init_from(self, self.init_from)
            self.init_from = None
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)

    def example_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random training batch of ``example_input_array``'s shape: (images, class ids)."""
        x = torch.randn_like(self.example_input_array)
        return x, torch.arange(len(x)) % self.hparams.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B, 3, H, W) -> logits (B, num_classes)."""
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.net(x)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy against class ids (B,) or class probabilities (B, C)."""
        return F.cross_entropy(logits, target, label_smoothing=self.hparams.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        x, y = self.transform_train_batch(x, y)
        logits = self(x)
        loss = self.training_loss(x, logits, y)
        # Soft targets: accuracy on the dominant label. update(), not forward(): train/acc is an epoch value, and
        # forward() would also compute a per-batch accuracy nobody reads (measurable on small nets, see benchmarks/).
        self.train_acc.update(logits.detach(), y if y.ndim == 1 else y.argmax(1))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        # Logged once an epoch rather than as a Metric object from every training_step: each self.log call costs
        # Lightning ~0.4 ms (it walks and deep-copies the logged entry's metadata on every call; Lightning issue
        # #20388), a fifth of a small net's step (benchmarks/overhead.py). compute() syncs the states under DDP.
        self.log("train/acc", self.train_acc.compute())
        self.train_acc.reset()

    # Training hooks for callbacks. Lightning's callback hooks cannot replace a batch or a loss, so the classifier
    # asks the trainer's callbacks, in their order, through two optional methods. Nothing is stored on the model,
    # so a callback's state (a teacher, an RNG) never enters the model's checkpoint, a deepcopy (SWA/EMA) or DDP.
    def _trainer_callbacks(self, method: str) -> list:
        try:
            callbacks = self.trainer.callbacks
        except RuntimeError:  # a model used outside a Trainer (a hand-written loop) has no callbacks
            return []
        return [cb for cb in callbacks if hasattr(cb, method)]

    def transform_train_batch(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook: each callback with ``transform_batch(trainer, pl_module, x, y) -> (x, y)`` rewrites the normalised
        training batch before the forward pass, e.g. ``zoo.callbacks.MixUpCutMix`` (targets become (B, C) probabilities)."""
        for cb in self._trainer_callbacks("transform_batch"):
            x, y = cb.transform_batch(self.trainer, self, x, y)
        return x, y

    def training_loss(self, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Hook: ``self.loss(logits, y)``, then each callback with ``training_loss(trainer, pl_module, x, logits, y,
        loss) -> loss`` may replace it, e.g. ``zoo.callbacks.Distillation`` (x: the batch the student saw)."""
        loss = self.loss(logits, y)
        for cb in self._trainer_callbacks("training_loss"):
            loss = cb.training_loss(self.trainer, self, x, logits, y, loss)
        return loss

    def predict_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits with the configured test-time augmentation."""
        return tta_logits(self, x, self.hparams.tta)

    def _evaluate(self, batch, stage: str, metric: MulticlassAccuracy) -> None:
        x, y = batch
        # Validation only monitors training, so it skips the (costly) test-time augmentation.
        logits = self(x) if stage == "val" else self.predict_logits(x)
        metric(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log(f"{stage}/acc", metric, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val", self.val_acc)

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test", self.test_acc)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities (B, num_classes)."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.predict_logits(x).softmax(-1)

    def parameter_groups(self) -> list[dict]:
        """Normalisation-layer parameters without weight decay (and at ``no_decay_lr_scale``); the rest with it.
        A group's optional ``lr_scale`` multiplies ``lr`` for that group, and its optional ``wd_scale`` the weight
        decay (see ``zoo.optim.create_optimizer``)."""
        norm_ids = {id(p) for m in self.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters()}
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if id(p) in norm_ids else decay).append(p)
        scale = self.hparams.no_decay_lr_scale
        groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lr_scale": scale}]
        return [g for g in groups if g["params"]]

    def configure_optimizers(self):
        return configure_optimizers(self, self.parameter_groups(), self.scheduler_factory,
                                    self.hparams.scheduler_interval)
