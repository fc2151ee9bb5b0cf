"""LightningDataModules of the zoo, one file per data family."""

from zoo.datamodules.cifar import CIFAR10DataModule
from zoo.datamodules.image_folder import ImageFolderDataModule
from zoo.datamodules.mnist import FashionMNISTDataModule, MNISTDataModule
from zoo.datamodules.paired import PairedImageDataModule
from zoo.datamodules.text import CharTextDataModule
from zoo.datamodules.timeseries import TimeSeriesDataModule

__all__ = [
    "CIFAR10DataModule",
    "CharTextDataModule",
    "FashionMNISTDataModule",
    "ImageFolderDataModule",
    "MNISTDataModule",
    "PairedImageDataModule",
    "TimeSeriesDataModule",
]
