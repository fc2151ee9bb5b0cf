"""Training, evaluation and prediction shared by the zoo's image classifiers.

A subclass declares only its own constructor arguments, passes the rest on (``**kwargs``: the classification
settings below are declared here, once, and LightningCLI follows ``**kwargs`` to this signature) and builds
``self.net`` (normalised images in, logits out). Everything else (loss with hard or soft targets, class weights and
the focal loss, weight initialisation, metrics, flip/translate test-time augmentation, optimizer groups and the
learning-rate schedule) lives here; the maths in ``zoo.losses`` and ``zoo.weight_init``.

Usage:
    class MyNet(ImageClassifier):
        def __init__(self, width: int = 64, **kwargs):
            super().__init__(**kwargs)
            self.net = ...
"""

from __future__ import annotations

import warnings
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable
from torch import nn

from zoo.losses import ClassWeightsError, balanced_class_weights, focal_loss, given_class_weights
from zoo.metrics import QUIET_METRIC_WARNINGS, classification_metrics, metric_keys
from zoo.optim import OptimizerName, Schedule, SchedulerInterval, configure_optimizers
from zoo.weight_init import NORM_LAYERS, InitScheme, init_weights  # NORM_LAYERS: no weight decay


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
    val/test log ``loss`` and ``classification_metrics`` (test also ``acc_<class>``, see ``label_names``), and return
    ``{"logits", "target"}`` for callbacks such as ``zoo.callbacks.ConfusionMatrix``.

    Args:
        num_classes: output classes.
        lr: peak learning rate (what Lightning's learning-rate finder sets).
        weight_decay: weight decay of the non-normalisation parameters.
        momentum: momentum of the SGD-family optimizers.
        optimizer: "sgd" (Nesterov), "momentum", "adam", "adamw", "radam", "ranger" (RAdam + Lookahead), "lamb",
            "rmsprop", built by ``timm.optim``; norm-layer parameters get no weight decay.
        label_smoothing: label smoothing of the training loss.
        loss: training loss, "cross_entropy" or "focal" (Lin et al. 2017, ``zoo.losses.focal_loss``). val/test
            losses stay the plain, unweighted cross-entropy, comparable between runs.
        focal_gamma: focusing parameter of the focal loss (0 is the cross-entropy).
        class_weights: per-class weights of the training loss (the focal loss's alpha): "none"; "balanced", the
            inverse class frequency of the training split normalised to mean 1, from the DataModule's
            ``class_counts()`` when fitting starts; or one float per class.
        init: weight initialisation applied when fitting starts (``zoo.weight_init``): "default" keeps PyTorch's
            (and each model's own); "xavier", "kaiming", "orthogonal", "cheatsheet" re-initialise every conv,
            linear and norm layer, a pretrained backbone included. ``init_from`` and a ``--ckpt_path`` resume load
            their weights afterwards, so they win.
        tta: test-time augmentation level for test/predict (0 none, 1 flip, 2 flip + translate).
        channels_last: keep activations in channels-last memory format.
        scheduler: called with the optimizer, stepped every ``scheduler_interval``. Overrides ``schedule``.
        scheduler_interval: "epoch" or "step", for ``scheduler``.
        schedule: built-in per-step schedule when ``scheduler`` is None: "constant", "linear" or "cosine" decay
            after the warm-up, "flat_cosine" (flat, then cosine over the second half) or "onecycle" (OneCycleLR).
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
        loss: Literal["cross_entropy", "focal"] = "cross_entropy",
        focal_gamma: float = 2.0,
        class_weights: Literal["none", "balanced"] | list[float] = "none",
        init: InitScheme = "default",
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
        # A buffer, to follow the device; not persistent: "balanced" is recomputed from the data at each fit, and
        # checkpoints from before the option must still load.
        self.register_buffer("class_weight", given_class_weights(class_weights, num_classes), persistent=False)
        self._initialised = False  # `init` is applied once, by the first fit
        self._loss_sum: torch.Tensor | None = None  # training loss summed on the device since it was last logged
        self._loss_steps = 0
        self._updated: set[str] = set()  # stages whose metrics hold updates
        # Training accuracy of the epoch as on-device counts (correct, seen): no host sync per step, and saved with
        # a checkpoint, so an epoch resumed midway reports the accuracy of the whole epoch.
        self.register_buffer("train_counts", torch.zeros(2), persistent=False)
        self.val_metrics = classification_metrics(num_classes)
        self.test_metrics = classification_metrics(num_classes, per_class=True)

    @classmethod
    def from_pretrained(cls, source: str, **overrides):
        """``zoo.load(source, **overrides)``, checked to be an instance of this class."""
        from zoo.hub import load

        model = load(source, **overrides)
        if not isinstance(model, cls):
            raise TypeError(f"{source} holds a {type(model).__name__}, not a {cls.__name__}.")
        return model

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.prepare_training()
        if self.init_from:  # any stage (e.g. `zoo predict --model.init_from NAME`); a --ckpt_path restore comes after
            from zoo.hub import init_from

            init_from(self, self.init_from)
            self.init_from = None
        if self.hparams.channels_last:
            self.to(memory_format=torch.channels_last)

    def prepare_training(self) -> None:
        """At fit start, before ``init_from`` and a checkpoint restore: the ``init`` scheme, "balanced" weights."""
        if self.hparams.init != "default" and not self._initialised:
            init_weights(self, self.hparams.init)
            self._initialised = True
        if self.hparams.class_weights == "balanced":
            dm = self.trainer.datamodule
            if not hasattr(dm, "class_counts"):
                what = type(dm).__name__ if dm is not None else "a run without a DataModule"
                raise ClassWeightsError(f"class_weights='balanced' needs the DataModule's class_counts(), which {what} "
                                        "lacks: pass class_weights as one float per class, or 'none'.")
            weight = balanced_class_weights(dm.class_counts())
            if len(weight) != self.num_classes:
                raise ClassWeightsError(f"{type(dm).__name__}.class_counts() has {len(weight)} classes, the model "
                                        f"num_classes={self.num_classes}; set --model.init_args.num_classes.")
            self.class_weight = weight.to(self.device)

    def label_names(self) -> list[str]:
        """Class names: the DataModule's ``classes``, else the hparam ``class_names``, else "0" ... "C-1"."""
        try:
            dm = self.trainer.datamodule
        except RuntimeError:  # outside a Trainer
            dm = None
        for names in (getattr(dm, "classes", None), self.hparams.get("class_names")):
            if names is not None and len(names) == self.num_classes:
                return [str(n) for n in names]
        return [str(i) for i in range(self.num_classes)]

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
        """The training loss against class ids (B,) or class probabilities (B, C): ``loss``, ``class_weights``,
        ``label_smoothing``."""
        h = self.hparams
        if h.loss == "focal":
            return focal_loss(logits, target, h.focal_gamma, self.class_weight, h.label_smoothing)
        return F.cross_entropy(logits, target, weight=self.class_weight, label_smoothing=h.label_smoothing)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        x, y = self.transform_train_batch(x, y)
        logits = self(x)
        loss = self.training_loss(x, logits, y)
        hits = (logits.detach().argmax(1) == (y if y.ndim == 1 else y.argmax(1))).sum()  # soft: the dominant label
        self.train_counts += torch.stack([hits.to(self.train_counts), self.train_counts.new_tensor(len(y))])
        # Each self.log call costs Lightning ~0.4 ms (it walks and deep-copies the logged entry's metadata; Lightning
        # issue #20388), a fifth of a small net's step (benchmarks/overhead.py). So the loss is summed on the device
        # (no .item(): no host sync) and logged, as the mean since the last log, only when it will be shown.
        self._loss_sum = loss.detach().float() + (0 if self._loss_sum is None else self._loss_sum)
        self._loss_steps += 1
        show, written = self._train_loss_due(batch_idx)
        if show:
            self.log("train/loss", self._loss_sum / self._loss_steps, prog_bar=True)
        if written:
            self._loss_sum, self._loss_steps = None, 0
        return loss  # FiniteLoss and the LR finder read this, every step

    def on_fit_start(self) -> None:
        self._loss_sum, self._loss_steps = None, 0  # not a sum left by an earlier fit (an LR finder stopped early)

    def _train_loss_due(self, batch_idx: int) -> tuple[bool, bool]:
        """(show, written): log ``train/loss`` now; a logger writes it (the mean restarts): where Lightning writes
        step metrics (as its ``should_update_logs``) and at the end of an epoch. Shown also at the first step."""
        try:
            t = self.trainer
        except RuntimeError:  # outside a Trainer self.log is a no-op anyway
            return False, False
        if (batch_idx + 1) % t.accumulate_grad_batches and not t.is_last_batch:
            return False, False  # mid-accumulation: the optimizer step, and with it the logging, comes later
        step, every = t.global_step + 1, t.log_every_n_steps  # global_step counts the steps done before this one
        last = t.is_last_batch or batch_idx + 1 >= t.num_training_batches or step == t.max_steps
        written = bool((every and step % every == 0) or last or t.should_stop or t.fast_dev_run)
        return written or step == 1, written

    def on_train_epoch_end(self) -> None:
        # Logged once an epoch (self.log is costly, see training_step), summed over the processes under DDP.
        correct, seen = self.trainer.strategy.reduce(self.train_counts.clone(), reduce_op="sum")
        if seen > 0:  # nothing to report when a resumed run starts at the end of the epoch
            self.log("train/acc", correct / seen)
        self.train_counts.zero_()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["train_counts"] = self.train_counts.cpu()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "train_counts" in checkpoint:
            self.train_counts.copy_(checkpoint["train_counts"])

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

    def _evaluate(self, batch, stage: str) -> dict[str, torch.Tensor]:
        x, y = batch
        # Validation only monitors training, so it skips the (costly) test-time augmentation.
        logits = self(x) if stage == "val" else self.predict_logits(x)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), sync_dist=True)
        # Probabilities in float32: AUROC needs them, and half-precision ones would tie and change the argmax.
        getattr(self, f"{stage}_metrics").update(logits.float().softmax(-1), y)
        self._updated.add(stage)
        return {"logits": logits.detach(), "target": y}

    def _log_metrics(self, stage: str) -> None:
        if stage not in self._updated:
            return
        metrics = getattr(self, f"{stage}_metrics")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", QUIET_METRIC_WARNINGS)
            values = metrics.compute()  # syncs the states under DDP
        metrics.reset()
        self._updated.discard(stage)
        per_class, support = values.pop("acc_per_class", None), values.pop("stat_scores")[:, 4]
        values["auroc"] = values["auroc"][support > 0].mean()  # macro over the classes that occur
        self.log(f"{stage}/acc", values.pop("acc"), prog_bar=True)
        self.log_dict({f"{stage}/{k}": v for k, v in values.items()})
        if per_class is not None:
            self.log_dict({f"{stage}/acc_{k}": v for k, v in zip(metric_keys(self.label_names()), per_class)})

    def validation_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_metrics("val")

    def test_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

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
