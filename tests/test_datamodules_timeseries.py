"""TimeSeriesDataModule (datamodules/timeseries.py): windows, chronological splits and the scaler, on a tiny series
and on the staged airline file."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA as SHARED

from zoo.datamodules.timeseries import TimeSeriesDataModule, read_column
from zoo.forecaster import seasonal_naive


def test_timeseries_windows_and_splits(csv_file: Path):
    series = read_column(csv_file, "passengers")
    dm = TimeSeriesDataModule(str(csv_file), column="passengers", window=12, horizon=3, val_size=6, test_size=12)
    dm.setup("fit")
    x, y = dm.datasets["test"].tensors
    assert x.shape == (10, 12) and y.shape == (10, 3)  # 12 - 3 + 1 origins in the test period
    assert torch.equal(y[-1], series[-3:]) and torch.equal(x[-1], series[-15:-3])
    assert torch.equal(dm.datasets["train"].tensors[1][-1], series[75:78])  # train targets end before val
    assert dm.scaler == pytest.approx((series[:78].mean().item(), series[:78].std().item()))
    with pytest.raises(ValueError, match="no column 'sales'"):
        read_column(csv_file, "sales")


@pytest.mark.skipif(not (SHARED / "timeseries/airline-passengers.csv").is_file(), reason="staged data absent")
def test_real_airline_series_and_its_baseline():
    dm = TimeSeriesDataModule(str(SHARED / "timeseries/airline-passengers.csv"), column="passengers")
    dm.setup("fit")
    assert len(dm.series) == 144 and dm.series.sum().item() == 40363
    x, y = dm.datasets["test"].tensors
    assert y.shape == (24, 1) and torch.equal(y[:, 0], dm.series[-24:])
    naive = seasonal_naive(x, 1, 12)
    assert torch.equal(naive[:, 0], dm.series[-36:-12])
