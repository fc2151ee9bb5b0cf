"""LightningDataModules of the zoo, one file per data family."""

from datamodules.cifar import CIFAR10DataModule

__all__ = ["CIFAR10DataModule"]
