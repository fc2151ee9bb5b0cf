"""What the DataModules share (datamodules/common.py): the licences the cards name, checksummed caches."""

import pytest

from zoo.datamodules.common import CIFAR10_LICENCE, known_licence


def test_licences_are_looked_up_by_the_dataset_folder_or_file_name():
    assert known_licence("tinyshakespeare/input.txt").startswith("Shakespeare")
    assert known_licence("/data/timeseries/airline-passengers.csv").startswith("Box-Jenkins")
    assert known_licence("cifar10-jpg") == known_licence("x/cifar10") == CIFAR10_LICENCE
    assert known_licence("my_photos/train") is None and known_licence("corpus.txt") is None


@pytest.mark.parametrize("damage", ["truncated", "bit-flipped", "no checksum"])
def test_a_damaged_cache_is_never_read(tmp_path, damage, capsys):
    """Caches of decoded data (CIFAR-10 arrays, frozen-backbone features) carry their sha256: a damaged one is
    reported and rebuilt by the caller, never used."""
    import numpy as np

    from zoo.datamodules.common import read_cache, write_cache

    path = tmp_path / "c.npz"
    arrays = {"images": np.arange(20000, dtype=np.uint8), "labels": np.arange(10)}
    write_cache(path, **arrays)
    assert all(np.array_equal(read_cache(path)[k], v) for k, v in arrays.items())
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif damage == "bit-flipped":
        data[len(data) // 2] ^= 0x01  # a value inside the array: numpy alone would load it silently
        path.write_bytes(bytes(data))
    else:
        path.with_name("c.npz.sha256").unlink()  # its writer was killed before the checksum
    assert read_cache(path) is None
    assert "does not match its checksum; building it again" in capsys.readouterr().out
