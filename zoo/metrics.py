"""Metrics: what the classifiers report (F1, precision, recall, AUROC, per-class accuracy), and for generated images
the Fréchet distance on any feature extractor and L1/PSNR/SSIM for translations.

Usage:
    metrics = classification_metrics(10, per_class=True); metrics.update(probs, labels); metrics.compute()
    fd = frechet_distance(PenultimateFeatures(zoo.load("cifar_cnn_fashion_mnist")), real_batches, fake_batches)
    m = image_metrics("val/"); m.update(to_unit(fake), to_unit(target)); m.compute()
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MetricCollection
from torchmetrics.classification import (MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score, MulticlassPrecision,
                                         MulticlassRecall, MulticlassStatScores)
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.image.fid import FrechetInceptionDistance

# torchmetrics warns when an evaluation set lacks a class (its AUROC is undefined); expected on tiny or sanity-check
# sets, and such classes are left out of the macro AUROC (torchmetrics would average them in as 0).
QUIET_METRIC_WARNINGS = r"No (positive|negative) samples in targets"


def classification_metrics(num_classes: int, per_class: bool = False) -> MetricCollection:
    """What val/test report, updated with class probabilities (B, C) and class ids (B,): acc (micro, i.e. plain
    accuracy), f1_macro, f1_micro, precision_macro, recall_macro, auroc (one-vs-rest per class (C,), exact: it keeps
    every prediction of the epoch, 10k x 10 floats for CIFAR-10), stat_scores (C, 5) (tp, fp, tn, fn, support) and,
    with ``per_class``, acc_per_class (C,)."""
    kw = {"num_classes": num_classes}
    metrics = {"acc": MulticlassAccuracy(average="micro", **kw), "f1_macro": MulticlassF1Score(average="macro", **kw),
               "f1_micro": MulticlassF1Score(average="micro", **kw),
               "precision_macro": MulticlassPrecision(average="macro", **kw),
               "recall_macro": MulticlassRecall(average="macro", **kw),
               "auroc": MulticlassAUROC(average="none", thresholds=None, **kw),
               "stat_scores": MulticlassStatScores(average="none", **kw)}
    if per_class:
        metrics["acc_per_class"] = MulticlassAccuracy(average="none", **kw)
    return MetricCollection(metrics)


def metric_keys(names: list[str]) -> list[str]:
    """Class names as metric-key suffixes (letters, digits, ``_.-``); indices if two names would collide."""
    keys = [re.sub(r"[^0-9A-Za-z_.-]+", "_", str(n)).strip("_") for n in names]
    return keys if len(set(keys)) == len(keys) and all(keys) else [str(i) for i in range(len(names))]


class PenultimateFeatures(nn.Module):
    """Wrap a classifier: its output becomes the input of its last ``nn.Linear`` (the penultimate features).

    Images go to ``classifier`` unchanged, so feed them as it was trained (same range, size and normalisation).
    """

    def __init__(self, classifier: nn.Module):
        super().__init__()
        linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("PenultimateFeatures needs a classifier ending in an nn.Linear.")
        self.classifier, self.head = classifier.eval(), linears[-1]
        self.num_features = self.head.in_features  # read by torchmetrics instead of a dummy forward pass

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured = []
        handle = self.head.register_forward_hook(lambda m, inp, out: captured.append(inp[0]))
        try:
            self.classifier(x)
        finally:
            handle.remove()
        return captured[0].flatten(1).float()  # (B, num_features)


def frechet_metric(features: nn.Module) -> FrechetInceptionDistance:
    """torchmetrics' FID machinery on any feature extractor (an nn.Module, images -> (B, D), with ``num_features``)."""
    return FrechetInceptionDistance(feature=features, reset_real_features=True)


@torch.no_grad()
def frechet_distance(features: nn.Module, real: Iterable[torch.Tensor], fake: Iterable[torch.Tensor]) -> float:
    """Fréchet distance between Gaussians fitted to ``features`` of two image streams (batches (B, C, H, W)).

    With Inception-v3 pool features this is FID; here any extractor works, e.g. ``PenultimateFeatures(classifier)``.
    Its value depends on the sample sizes: compare numbers only at equal sizes (e.g. against the real-vs-real floor).
    """
    metric = frechet_metric(features)
    for x in real:
        metric.update(x, real=True)
    for x in fake:
        metric.update(x, real=False)
    return float(metric.compute())


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1], float32."""
    return ((x.float() + 1) / 2).clamp(0, 1)


def image_metrics(prefix: str) -> MetricCollection:
    """L1, PSNR (mean over images) and SSIM of [0, 1] images."""
    return MetricCollection({"l1": MeanAbsoluteError(), "psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
                             "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)}, prefix=prefix)
