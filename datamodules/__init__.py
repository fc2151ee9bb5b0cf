"""LightningDataModules of the zoo, one file per data family."""

from datamodules.cifar import CIFAR10DataModule
from datamodules.image_folder import ImageFolderDataModule
from datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from datamodules.paired import PairedImageDataModule
from datamodules.text import CharTextDataModule
from datamodules.timeseries import TimeSeriesDataModule

__all__ = [
    "CIFAR10DataModule",
    "CharTextDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "PairedImageDataModule",
    "TimeSeriesDataModule",
]
