"""Weight initialisation schemes, applied to every conv, linear and normalisation layer of a module.

Usage:
    init_weights(model, "cheatsheet")     # or "xavier", "kaiming", "orthogonal"; "default" leaves PyTorch's init

Every scheme but "default" sets biases to 0 and normalisation layers to weight 1, bias 0; the weights of
``nn.Linear`` and ``nn.Conv{1,2,3}d`` / ``nn.ConvTranspose{1,2,3}d`` layers get:

  ==============  ==========================================================  =================================
  scheme          conv                                                        linear
  ==============  ==========================================================  =================================
  xavier          Xavier-uniform (Glorot & Bengio 2010)                       Xavier-uniform
  kaiming         He-normal, fan-in, ReLU gain (He et al. 2015)               He-normal, fan-in, ReLU gain
  orthogonal      orthogonal, ReLU gain (Saxe et al. 2014)                    orthogonal, gain 1
  cheatsheet      Xavier-uniform with ReLU gain sqrt(2)                       Xavier-uniform
  ==============  ==========================================================  =================================

"cheatsheet" is the deep-learning cheatsheet's recipe. Other layers (embeddings, recurrent cells, custom parameters)
keep what they have.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

InitScheme = Literal["default", "xavier", "kaiming", "orthogonal", "cheatsheet"]
INIT_SCHEMES = ("default", "xavier", "kaiming", "orthogonal", "cheatsheet")

CONV_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
# Normalisation layers (public classes; subclasses such as timm's BatchNormAct2d match).
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _init_weight(weight: torch.Tensor, scheme: str, conv: bool) -> None:
    relu = nn.init.calculate_gain("relu")
    if scheme == "xavier":
        nn.init.xavier_uniform_(weight)
    elif scheme == "kaiming":
        nn.init.kaiming_normal_(weight, mode="fan_in", nonlinearity="relu")
    elif scheme == "orthogonal":
        nn.init.orthogonal_(weight, gain=relu if conv else 1.0)
    else:  # cheatsheet
        nn.init.xavier_uniform_(weight, gain=relu if conv else 1.0)


@torch.no_grad()
def init_weights(module: nn.Module, scheme: InitScheme) -> nn.Module:
    """Re-initialise ``module``'s conv, linear and normalisation layers in place (see the module docstring).

    Args:
        module: any module; its submodules are visited recursively.
        scheme: "default" (a no-op), "xavier", "kaiming", "orthogonal" or "cheatsheet".

    Returns:
        ``module``, for chaining.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"Unknown init scheme {scheme!r}; choose one of {', '.join(INIT_SCHEMES)}.")
    if scheme == "default":
        return module
    for m in module.modules():
        if isinstance(m, (nn.Linear, *CONV_LAYERS)):
            _init_weight(m.weight, scheme, conv=isinstance(m, CONV_LAYERS))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, NORM_LAYERS):
            if getattr(m, "weight", None) is not None:  # affine=False / elementwise_affine=False have none
                nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
    return module
