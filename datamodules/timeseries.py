"""A univariate time series from one CSV column, served as sliding windows for forecasting.

Usage:
    dm = TimeSeriesDataModule("timeseries/airline-passengers.csv", column="passengers", window=24, test_size=24)
    # zoo fit --config configs/lstm_airline.yaml

The series is split in time: the last ``test_size`` values are test targets, the ``val_size`` before them validation
targets, the rest training targets. A sample is ``(history, target)``: ``window`` consecutive values and the
``horizon`` values that follow, both in the series' own units; every target of a split lies inside that split, while
its history may reach back into earlier ones (it is the past, known at forecast time). ``dm.scaler`` holds the mean and
standard deviation of the training part; the model stores them, so it scales its inputs and unscales its forecasts
without the data.
"""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from zoo.errors import UserError
from zoo.datamodules.common import known_licence, resolve_data_dir

SOURCE = ("Box-Jenkins airline passengers, e.g. GitHub AbdenacerKerrouche/Airline_Passengers_Forecasting, "
          "file airline-passengers.csv (header 'Month,passengers', 144 monthly rows)")


def read_column(path: Path, column: str | None) -> torch.Tensor:
    """Values (N,) float32 of ``column`` (default: the last) of a CSV file with a header row, in file order."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path} has no data rows.")
    names = list(rows[0])
    column = column or names[-1]
    if column not in names:
        raise ValueError(f"{path} has no column {column!r}; its columns are {names}.")
    try:
        return torch.tensor([float(r[column]) for r in rows], dtype=torch.float32)
    except ValueError as err:
        raise ValueError(f"{path}, column {column!r}: every value must be a number ({err}).") from err


def windows(series: torch.Tensor, window: int, horizon: int, first: int, end: int) -> tuple[torch.Tensor, ...]:
    """Histories (M, window) and targets (M, horizon) for every target block starting at ``t`` with
    ``first <= t`` and ``t + horizon <= end``; the history is ``series[t - window : t]``."""
    starts = range(max(first, window), end - horizon + 1)
    x = torch.stack([series[t - window : t] for t in starts]) if starts else series.new_zeros(0, window)
    y = torch.stack([series[t : t + horizon] for t in starts]) if starts else series.new_zeros(0, horizon)
    return x, y


class TimeSeriesNotFoundError(UserError, FileNotFoundError):
    """The CSV is not where the DataModule looked; the message names the file and the fix."""


class TimeSeriesDataModule(L.LightningDataModule):
    """Sliding windows over one numeric CSV column, split in time into train / val / test targets.

    Args:
        path: the CSV file (header row); relative paths are taken under ``data_dir``.
        column: the column to forecast; default the last one.
        data_dir: root for relative ``path``; default ``$ZOO_DATA_DIR``, else ``./data``.
        window: past values the model sees.
        horizon: future values it forecasts at once.
        val_size: values before the test period whose forecasts are validation targets.
        test_size: final values whose forecasts are test targets.
        batch_size: windows per training batch (evaluation uses whole splits).
    """

    def __init__(
        self,
        path: str,
        column: str | None = None,
        data_dir: str | None = None,
        window: int = 24,
        horizon: int = 1,
        val_size: int = 12,
        test_size: int = 24,
        batch_size: int = 16,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.file = Path(path) if Path(path).is_absolute() else resolve_data_dir(data_dir) / path
        self.series: torch.Tensor | None = None
        self.scaler: tuple[float, float] | None = None  # (mean, std) of the training part
        self.datasets: dict[str, TensorDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.series is not None:
            return
        if not self.file.is_file():
            raise TimeSeriesNotFoundError(
                f"No time series CSV at {self.file}. Fix: point ZOO_DATA_DIR at the folder holding "
                f"{self.hparams.path} (zoo evaluate: --data-dir; zoo fit: --data.data_dir, or --data.path for another "
                f"CSV with a header row). Source of the airline data: {SOURCE}.")
        h = self.hparams
        self.series = series = read_column(self.file, h.column)
        n_train = len(series) - h.val_size - h.test_size
        if n_train - h.window - h.horizon + 1 < 1:
            raise ValueError(f"{len(series)} values leave no training window of {h.window}+{h.horizon} after holding "
                             f"out val_size={h.val_size} and test_size={h.test_size}.")
        train = series[:n_train]
        self.scaler = (float(train.mean()), float(train.std()))
        bounds = {"train": (0, n_train), "val": (n_train, n_train + h.val_size), "test": (n_train + h.val_size, None)}
        for name, (first, end) in bounds.items():
            self.datasets[name] = TensorDataset(*windows(series, h.window, h.horizon, first, end or len(series)))

    def card_info(self) -> dict:
        """What a model card records about this data: the series, the splits and the input scaling."""
        h = self.hparams
        return {
            "dataset": f"{Path(h.path).name} (column {h.column!r})",
            "train_split": f"all but the last {h.val_size + h.test_size} values",
            "test_split": f"the last {h.test_size} values, one-step-ahead forecasts from {h.window}-value windows",
            "licence": known_licence(h.path),
            "preprocessing": {"input": f"the last {h.window} raw values; the model standardises them with its "
                              "loc/scale buffers (training mean/std) and returns values in the series' units"},
        }

    def _loader(self, split: str, shuffle: bool = False) -> DataLoader | list:
        data = self.datasets[split]
        if len(data) == 0:
            return []
        return DataLoader(data, batch_size=self.hparams.batch_size if shuffle else len(data), shuffle=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test")

    def predict_dataloader(self) -> DataLoader:
        """The last ``window`` values: the model forecasts the ``horizon`` values after the end of the series."""
        return DataLoader(TensorDataset(self.series[-self.hparams.window :].unsqueeze(0)), batch_size=1)
