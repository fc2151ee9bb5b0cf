"""A published checkpoint's input preprocessing as a torchvision transform, built from its card (as torchvision's
``weights.transforms()`` and timm's ``create_transform(**data_config)`` do), so nobody retypes mean/std.

Usage:
    model = zoo.load("cifar_resnet_cifar10")
    x = model.transforms()(PIL.Image.open("cat.jpg")).unsqueeze(0)     # (1, 3, 32, 32), normalised
    probs = model(x).softmax(-1)
    zoo.transforms("pix2pix_cifar_edges")(photo)                        # photo -> the edge drawing the model takes

Image -> tensor for every image model: the classifiers, the VAE (an image to reconstruct) and pix2pix (a photo, from
which the card's A input is derived). Models whose input is not an image (char LSTM, forecaster, DCGAN) raise, with
what they take instead.
"""

from __future__ import annotations

from typing import Callable

import torch


def transforms(card: dict) -> Callable:
    """The transform a PIL image or uint8 tensor (C, H, W) goes through before ``model(x)`` for the card's model."""
    from torchvision.transforms import v2

    if card.get("model") == "dcgan":
        raise ValueError(f"{card.get('name')}: a DCGAN takes latent noise (B, latent_dim), not an image; use "
                         "model.sample(n).")
    pre, data = card.get("preprocessing") or {}, (card.get("data") or {}).get("init_args") or {}
    to_float = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]  # -> (C, H, W) in [0, 1]
    if "crop_pct" in pre:  # a timm model: timm's own eval transform for its data config
        from timm.data import create_transform

        return create_transform(**{k: tuple(v) if isinstance(v, list) else v for k, v in pre.items()})
    if "mean" in pre:  # RGB classifiers normalised with the dataset's mean/std
        return v2.Compose([v2.ToImage(), v2.RGB(), v2.Resize(tuple(pre["image_size"]), antialias=True), *to_float[1:],
                           v2.Normalize(pre["mean"], pre["std"])])
    if card.get("layout") in ("edges", "grayscale"):  # pix2pix: derive A from a photo as the training pairs did
        from zoo.datamodules.paired import edges, grayscale

        derive = edges if card["layout"] == "edges" else (lambda rgb: grayscale(rgb)[None])
        size = tuple(pre["image_size"])
        return v2.Compose([v2.ToImage(), v2.RGB(), v2.Resize(size, antialias=True), *to_float[1:],
                           v2.Lambda(derive), v2.Normalize([0.5], [0.5])])
    if "value_range" in data:  # MNIST-style grey images, resized or padded
        size, native = int(data.get("image_size", 28)), 28
        fit = [v2.Resize((native, native), antialias=True)]
        if data.get("resize", "pad") == "pad" and size > native:
            fit.append(v2.Pad((size - native) // 2))
        else:
            fit = [v2.Resize((size, size), antialias=True)]
        scale = [v2.Normalize([0.5], [0.5])] if data["value_range"] == "-1,1" else []
        return v2.Compose([v2.ToImage(), v2.Grayscale(), *fit, *to_float[1:], *scale])
    takes = (pre.get("input") or "").split(";")[0] or "no image"
    raise ValueError(f"{card.get('name')}: {card.get('model')} takes {takes}, not an image; see its card.")
