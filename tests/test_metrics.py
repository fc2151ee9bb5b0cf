"""zoo/metrics.py: the Fréchet distance on features whose answer can be worked out by hand."""

from __future__ import annotations

import pytest
import torch

from zoo.metrics import frechet_distance


def test_frechet_distance_on_hand_checkable_features():
    class Flatten(torch.nn.Module):
        num_features = 4

        def forward(self, x):
            return x.flatten(1)

    torch.manual_seed(0)
    real = torch.randn(2000, 1, 2, 2)
    # Same samples shifted by 1 in each of the 4 dims: equal covariances, so the distance is |shift|^2 = 4.
    assert frechet_distance(Flatten(), [real], [real + 1]) == pytest.approx(4.0, abs=1e-3)
    assert frechet_distance(Flatten(), real.split(500), real.split(300)) == pytest.approx(0.0, abs=1e-3)
