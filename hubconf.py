"""torch.hub entry points: every published checkpoint (pretrained, eval mode) and every registered model (new).

Usage:
    model = torch.hub.load("path/to/zoo", "cifar_resnet_cifar10", source="local")   # published weights + card
    model = torch.hub.load("path/to/zoo", "cifar_cnn", source="local", num_classes=100)  # a fresh model
"""

import zoo
from zoo.hub import published

dependencies = ["torch", "lightning", "torchvision", "timm", "safetensors"]


def _pretrained(name: str):
    def entry(**overrides):
        return zoo.load(name, **overrides)

    entry.__doc__ = f"The published checkpoint {name!r} in eval mode (zoo.load); its card is model.zoo_card."
    return entry


def _fresh(name: str):
    def entry(**kwargs):
        return zoo.get_model(name, **kwargs)

    entry.__doc__ = f"A new, randomly initialised {name!r} (zoo.get_model); keyword arguments go to its constructor."
    return entry


for _name in published():
    globals()[_name] = _pretrained(_name)
for _name in zoo.list_models():
    globals()[_name] = _fresh(_name)
