"""Batch normalisation over the whole global batch on any device, CPU included, for DDP runs.

Usage:
    zoo fit --config configs/dcgan_fashion_mnist.yaml --trainer configs/trainer/ddp.yaml --trainer.sync_batchnorm true
    trainer = L.Trainer(strategy="ddp", devices=2, plugins=[GlobalBatchNormSync()])   # the same, by hand

Under DDP each process normalises its own part of the batch, so 2 processes at a batch of B/2 train differently from
1 process at B. Lightning's ``sync_batchnorm=True`` fixes that with ``torch.nn.SyncBatchNorm``, whose kernels run on
CUDA only; on CPU ``zoo fit`` swaps in this plugin instead (same statistics, gathered with differentiable
all-reduces), so B/2 x 2 processes give the weights of B x 1 to float tolerance (tests/test_distributed.py).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.plugins import LayerSync
from torch import nn
from torch.distributed.nn.functional import all_reduce


class GlobalStatistics:
    """Mixed into torch's BatchNorm1d/2d/3d: in DDP training the per-channel mean and variance are those of the batch
    gathered over all processes (two all-reduces: sums, then squared deviations), and gradients flow back through
    them as through one big batch. Outside DDP training it is torch's batch norm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        local = torch.cat([x.sum(dims), x.new_tensor([x.numel() / x.shape[1]])])  # (C + 1,) sums and count
        total = all_reduce(local)
        n = total[-1]
        mean = total[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / n  # biased, as batch norm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * n / (n - 1), momentum)  # unbiased, as torch keeps it
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


class GlobalBatchNorm1d(GlobalStatistics, nn.BatchNorm1d):
    pass


class GlobalBatchNorm2d(GlobalStatistics, nn.BatchNorm2d):
    pass


class GlobalBatchNorm3d(GlobalStatistics, nn.BatchNorm3d):
    pass


# Subclasses of torch's own, not of nn.SyncBatchNorm: DistributedDataParallel refuses SyncBatchNorm layers on CPU.
SYNCED = {nn.BatchNorm1d: GlobalBatchNorm1d, nn.BatchNorm2d: GlobalBatchNorm2d, nn.BatchNorm3d: GlobalBatchNorm3d}


def _swap(model: nn.Module, classes: dict) -> nn.Module:
    """``model`` with every module of a class in ``classes`` replaced by the mapped class, weights and stats kept."""
    cls = classes.get(type(model))
    if cls is not None:
        swapped = cls(model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats)
        swapped.load_state_dict(model.state_dict())
        return swapped.to(model.running_mean.device if model.track_running_stats else model.weight.device)
    for name, child in model.named_children():
        setattr(model, name, _swap(child, classes))
    return model


class GlobalBatchNormSync(LayerSync):
    """Lightning plugin: every BatchNorm1d/2d/3d becomes its ``GlobalBatchNorm`` twin for fit under DDP (state-dict
    keys unchanged), and torch's own again afterwards."""

    def apply(self, model: nn.Module) -> nn.Module:
        return _swap(model, SYNCED)

    def revert(self, model: nn.Module) -> nn.Module:
        return _swap(model, {synced: plain for plain, synced in SYNCED.items()})
