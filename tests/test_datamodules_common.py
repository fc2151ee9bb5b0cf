"""What the DataModules share (datamodules/common.py): the licences the cards name."""

from zoo.datamodules.common import CIFAR10_LICENCE, known_licence


def test_licences_are_looked_up_by_the_dataset_folder_or_file_name():
    assert known_licence("tinyshakespeare/input.txt").startswith("Shakespeare")
    assert known_licence("/data/timeseries/airline-passengers.csv").startswith("Box-Jenkins")
    assert known_licence("cifar10-jpg") == known_licence("x/cifar10") == CIFAR10_LICENCE
    assert known_licence("my_photos/train") is None and known_licence("corpus.txt") is None
