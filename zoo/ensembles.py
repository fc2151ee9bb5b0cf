"""Ensembles of published classifiers: the mean of their class probabilities (each with its own test-time
augmentation), for checkpoints trained on the same classes with the same preprocessing.

Usage:
    model = zoo.ensemble(["cifar_cnn_cifar10", "cifar_resnet_cifar10"])
    probs = model(images)                        # (B, classes), images as the members' card says
    zoo evaluate cifar_cnn_cifar10+cifar_resnet_cifar10   # each member and the ensemble on the test set
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from zoo.errors import UserError


class EnsembleError(UserError, ValueError):
    """Members that cannot be averaged (other classes or preprocessing, not classifiers)."""


class Ensemble(L.LightningModule):
    """Averages the probabilities of ``members`` (eval-mode zoo classifiers with cards). ``forward`` returns the
    averaged probabilities; ``test`` logs ``test/acc`` and ``test/loss`` (the NLL of the averaged probabilities)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise EnsembleError("An ensemble needs at least two checkpoints.")
        cards = [getattr(m, "zoo_card", None) or {} for m in members]
        names = [c.get("name", type(m).__name__) for c, m in zip(cards, members)]
        for key in ("classes", "preprocessing"):
            values = [c.get(key) for c in cards]
            if any(v != values[0] for v in values):
                raise EnsembleError(f"{' + '.join(names)}: the checkpoints differ in {key}; an ensemble averages "
                                    "models of the same classes fed the same inputs.")
        if not all(hasattr(m, "predict_logits") for m in members):
            raise EnsembleError(f"{' + '.join(names)}: only classifiers can be ensembled.")
        self.members = nn.ModuleList(members).eval()
        self.zoo_card = {"name": "+".join(names), "model": "ensemble", "members": names,
                         "classes": cards[0].get("classes"), "preprocessing": cards[0].get("preprocessing"),
                         "data": cards[0].get("data"), "metrics": {}}
        self.test_acc = MulticlassAccuracy(num_classes=len(cards[0].get("classes") or []) or
                                           members[0].hparams.num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean class probabilities (B, classes) over the members, each with its configured TTA."""
        return torch.stack([m.predict_logits(x).softmax(-1) for m in self.members]).mean(0)

    def test_step(self, batch, batch_idx: int) -> None:
        x, y = batch
        probs = self(x)
        self.test_acc(probs, y)
        self.log("test/loss", F.nll_loss(probs.clamp_min(1e-12).log(), y), sync_dist=True)
        self.log("test/acc", self.test_acc)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self(batch[0] if isinstance(batch, (tuple, list)) else batch)


def ensemble(sources: list[str]) -> Ensemble:
    """An ``Ensemble`` of the ``zoo.load`` sources (e.g. published names)."""
    import zoo

    return Ensemble([zoo.load(s) for s in sources]).eval()

