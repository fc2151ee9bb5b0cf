"""The course notes' classic small CNN for 32x32 images (CIFAR-10; MNIST-style sets padded to 32 px).

Usage:
    model = zoo.get_model("cifar_cnn")               # or: zoo fit --config configs/cifar_cnn.yaml
    logits = model(images)                           # images normalised with CIFAR-10 mean/std, (B, 3, 32, 32)
"""

from __future__ import annotations

import torch
from torch import nn

from zoo import register_model
from zoo.classifier import ImageClassifier


def classic_cnn(num_classes: int, dropout: float, in_channels: int = 3) -> nn.Sequential:
    """Three 3x3 conv layers (16/32/64), each ReLU + 2x2 max-pool; dropout; Linear 1024 -> 500 -> classes.
    Made for 32x32 inputs (CIFAR-10; MNIST-style sets padded to 32 px with ``in_channels=1``)."""
    layers: list[nn.Module] = []
    for c_in, c_out in ((in_channels, 16), (16, 32), (32, 64)):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
    return nn.Sequential(
        *layers,  # (B, 64, 4, 4)
        nn.Flatten(),
        nn.Dropout(dropout),
        nn.Linear(64 * 4 * 4, 500),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(500, num_classes),
    )



@register_model("cifar_cnn", description="Classic small CNN from the course notes (16/32/64 convs, 1024-500-10)")
class CifarCNN(ImageClassifier):
    """The classic small CNN: three conv/ReLU/max-pool layers, dropout, two linear layers.

    Args:
        dropout: dropout before each linear layer.
        in_channels: image channels (1 for MNIST / Fashion-MNIST padded to 32 px).
        **kwargs: the classification settings of :class:`~zoo.classifier.ImageClassifier` (num_classes, lr, ...).
    """

    def __init__(self, dropout: float = 0.25, in_channels: int = 3, **kwargs):
        super().__init__(**kwargs)
        self.net = classic_cnn(self.hparams.num_classes, dropout, in_channels)
        self.example_input_array = torch.zeros(2, in_channels, 32, 32)
