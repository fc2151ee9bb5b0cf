"""The flagship: an airbench94-style CIFAR-10 net (Keller Jordan, 2024) trained with airbench94's recipe.

Usage:
    model = zoo.get_model("cifar_resnet")            # or: zoo fit --config configs/cifar_resnet.yaml
    logits = model(images)                           # images normalised with CIFAR-10 mean/std, (B, 3, 32, 32)
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from zoo import register_model
from zoo.classifier import ImageClassifier
from zoo.optim import OptimizerName, Schedule


def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    """Bias-free 3x3 conv whose first ``c_in`` filters start as the identity (Dirac init), as in airbench."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    nn.init.dirac_(conv.weight.data[: min(c_in, c_out)])
    return conv


def batch_norm(c: int, momentum: float) -> nn.BatchNorm2d:
    """BatchNorm with a fixed unit scale (only the shift is learned) and a fast-moving running average."""
    bn = nn.BatchNorm2d(c, momentum=momentum, eps=1e-12)
    bn.weight.requires_grad_(False)
    return bn


class ConvGroup(nn.Module):
    """conv -> 2x2 max-pool -> BN -> GELU -> conv -> BN -> GELU, optionally with an identity skip around conv 2."""

    def __init__(self, c_in: int, c_out: int, bn_momentum: float, residual: bool):
        super().__init__()
        self.conv1, self.pool, self.norm1 = conv3x3(c_in, c_out), nn.MaxPool2d(2), batch_norm(c_out, bn_momentum)
        self.conv2, self.norm2 = conv3x3(c_out, c_out), batch_norm(c_out, bn_momentum)
        self.act, self.residual = nn.GELU(), residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))  # (B, c_out, H/2, W/2)
        y = self.act(self.norm2(self.conv2(x)))
        return x + y if self.residual else y


class SpeedrunNet(nn.Module):
    """airbench94-style net (Keller Jordan, 2024): a frozen 2x2 patch-whitening conv, three conv groups, global
    max-pool, a bias-free linear head scaled by ``logit_scale``. Input (B, 3, 32, 32) -> logits (B, classes)."""

    def __init__(self, widths: list[int], num_classes: int, bn_momentum: float, residual: bool, logit_scale: float):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, kernel_size=2, bias=True)  # weights set from data by init_whitening
        self.whiten.weight.requires_grad_(False)
        nn.init.zeros_(self.whiten.bias)
        self.register_buffer("whitened", torch.tensor(False))
        chans = [24, *widths]
        self.groups = nn.Sequential(
            *(ConvGroup(a, b, bn_momentum, residual) for a, b in zip(chans[:-1], chans[1:]))
        )
        self.head = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = logit_scale

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the first conv to whiten 2x2 patches of ``x`` (B, 3, H, W): eigenvectors of the patch covariance,
        scaled by 1/sqrt(eigenvalue), in both signs."""
        patches = x.unfold(2, 2, 1).unfold(3, 2, 1).transpose(1, 3).reshape(-1, 3 * 2 * 2).double()  # (N, 12)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        # Rows of eigenvectors.T are patches flattened as (c, kh, kw), i.e. conv filters; largest eigenvalue first.
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps).unsqueeze(1)).reshape(12, 3, 2, 2).flip(0)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))
        self.whitened.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.gelu(self.whiten(x))  # (B, 24, 31, 31)
        x = self.groups(x)  # (B, widths[-1], 3, 3)
        x = torch.amax(x, dim=(2, 3))
        return self.head(x) * self.logit_scale


@register_model("cifar_resnet", description="Fast speed-run-style CIFAR-10 net (airbench94 recipe), the flagship",
                tiny={"widths": (8, 16, 16)})
class CifarResNet(ImageClassifier):
    """The flagship: an airbench94-style net with data-dependent whitening, trained with label smoothing,
    Nesterov SGD, a warm-up/linear-decay schedule, fast BN biases and flip + translate test-time augmentation.

    Args:
        widths: channels of the three conv groups.
        bn_momentum: BatchNorm running-average momentum (PyTorch convention).
        residual: identity skip around each group's second conv (off in airbench94, whose Dirac-initialised convs
            already start as identities).
        logit_scale: constant scale on the logits.
        whiten_bias_epochs: epochs during which the whitening conv's bias is trained; frozen afterwards.
        bn_bias_decay: decay the BatchNorm biases at the same per-step rate as the other weights (their weight decay
            divided by ``no_decay_lr_scale``, as airbench does) instead of not at all.
        lookahead: airbench's Lookahead: every 5 steps the weights move to an exponential average of themselves whose
            decay grows as ``0.95**5 * progress**3``; training ends on the averaged weights.
        **kwargs: the classification settings of :class:`~zoo.classifier.ImageClassifier`. Those restated here
            default to airbench94's recipe: its lr 11.5 and weight decay 0.0153 per 1024 examples, converted to a
            mean-reduced loss; Nesterov SGD at momentum 0.85; label smoothing 0.2; flip + translate TTA; 23 % warm-up
            from 0.2x, linear decay to 0.07x; BatchNorm biases at 64x the LR.
    """

    def __init__(
        self,
        widths: tuple[int, int, int] = (64, 256, 256),
        bn_momentum: float = 0.4,
        residual: bool = False,
        logit_scale: float = 1 / 9,
        whiten_bias_epochs: int = 3,
        bn_bias_decay: bool = True,
        lookahead: bool = True,
        lr: float = 1.5,
        weight_decay: float = 0.00133,
        momentum: float = 0.85,
        optimizer: OptimizerName = "sgd",
        label_smoothing: float = 0.2,
        tta: Literal[0, 1, 2] = 2,
        schedule: Schedule = "linear",
        warmup: float = 0.23,
        lr_start: float = 0.2,
        lr_end: float = 0.07,
        no_decay_lr_scale: float = 64.0,
        **kwargs,
    ):
        super().__init__(lr=lr, weight_decay=weight_decay, momentum=momentum, optimizer=optimizer,
                         label_smoothing=label_smoothing, tta=tta, schedule=schedule, warmup=warmup,
                         lr_start=lr_start, lr_end=lr_end, no_decay_lr_scale=no_decay_lr_scale, **kwargs)
        self.net = SpeedrunNet(list(widths), self.hparams.num_classes, bn_momentum, residual, logit_scale)
        self.example_input_array = torch.zeros(2, 3, 32, 32)
        self._slow: dict[str, torch.Tensor] | None = None  # Lookahead's averaged weights (kept out of state_dict)

    def parameter_groups(self) -> list[dict]:
        groups = super().parameter_groups()
        if self.hparams.bn_bias_decay:
            for group in groups:
                if "lr_scale" in group:  # the BN biases: decay / lr_scale per unit of LR, as in airbench
                    group.pop("weight_decay", None)
                    group["wd_scale"] = 1.0 / group["lr_scale"]
        return groups

    def on_train_epoch_start(self) -> None:
        self.net.whiten.bias.requires_grad_(self.current_epoch < self.hparams.whiten_bias_epochs)

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if not self.hparams.lookahead:
            return
        step, total = self.global_step, self.trainer.estimated_stepping_batches
        update = step % 5 == 0 or step >= total
        if self._slow is not None and not update:
            return
        state = {k: v for k, v in self.net.state_dict().items() if v.is_floating_point()}
        if self._slow is None:
            self._slow = {k: v.detach().clone() for k, v in state.items()}
        if update:
            decay = 1.0 if step >= total else 0.95**5 * (step / total) ** 3
            for k, v in state.items():
                self._slow[k].lerp_(v, 1 - decay)
                v.copy_(self._slow[k])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self._slow is not None:  # a resumed run continues the same average
            checkpoint["lookahead"] = {k: v.detach().cpu() for k, v in self._slow.items()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if "lookahead" in checkpoint:
            self._slow = dict(checkpoint["lookahead"])

    def on_train_start(self) -> None:
        if self._slow is not None:  # restored from a checkpoint on the CPU
            self._slow = {k: v.to(self.device) for k, v in self._slow.items()}

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        # Data-dependent init from the first training batch; rank 0's filters are shared so DDP replicas agree.
        if not bool(self.net.whitened):
            self.net.init_whitening(batch[0].float())
            weight = self.trainer.strategy.broadcast(self.net.whiten.weight.data, src=0)
            self.net.whiten.weight.data.copy_(weight)
