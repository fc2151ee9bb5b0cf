"""Metrics of generated images: Fréchet distance on any feature extractor, and L1/PSNR/SSIM for translations.

Usage:
    fd = frechet_distance(PenultimateFeatures(zoo.load("cifar_cnn_fashion_mnist")), real_batches, fake_batches)
    m = image_metrics("val/"); m.update(to_unit(fake), to_unit(target)); m.compute()
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torchmetrics import MeanAbsoluteError, MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure
from torchmetrics.image.fid import FrechetInceptionDistance


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
