"""LSTM forecaster (zoo/forecaster.py, issue 7) and its seasonal-naive baseline, on a tiny synthetic series."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

import zoo
from zoo.cli import main
from zoo.datamodules.timeseries import TimeSeriesDataModule, read_column
from zoo.forecaster import LSTMForecaster, seasonal_naive

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def trainer(**kwargs) -> L.Trainer:
    defaults = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                "enable_model_summary": False, "num_sanity_val_steps": 0}
    return L.Trainer(**{**defaults, **kwargs})


def test_seasonal_naive_repeats_the_last_season():
    history = torch.arange(30.0).view(1, 30)  # value = time index; the forecast origin is t = 30
    assert seasonal_naive(history, 1, 12).tolist() == [[18.0]]  # y[30 - 12]
    assert seasonal_naive(history, 14, 12).tolist() == [[18.0 + j % 12 for j in range(14)]]  # wraps after a season
    with pytest.raises(ValueError, match="too short"):
        seasonal_naive(history[:, :10], 1, 12)


@pytest.mark.parametrize("horizon", [1, 3])
def test_forecaster_shapes_and_gradients(horizon: int):
    model = zoo.get_model("lstm_forecaster", horizon=horizon, hidden_size=8, num_layers=2)
    x = torch.randn(5, 24) * 10 + 100
    out = model(x)
    assert out.shape == (5, horizon)
    ((out - 100) ** 2).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_forecaster_reports_baseline_and_keeps_its_scaler(csv_file: Path, tmp_path: Path):
    torch.manual_seed(0)
    dm = TimeSeriesDataModule(str(csv_file), column="passengers", window=12, val_size=6, test_size=12)
    model = LSTMForecaster(hidden_size=8)
    t = trainer(max_epochs=3)
    t.fit(model, dm)
    metrics = t.test(model, dm, verbose=False)[0]
    series = read_column(csv_file, None)
    naive_err = series[-12:] - series[-24:-12]  # one month ahead: same month a year earlier
    assert metrics["test/naive_mae"] == pytest.approx(naive_err.abs().mean().item(), rel=1e-5)
    assert metrics["test/naive_rmse"] == pytest.approx(naive_err.pow(2).mean().sqrt().item(), rel=1e-5)
    x, y = dm.datasets["test"].tensors
    assert metrics["test/mae"] == pytest.approx((model(x) - y).abs().mean().item(), rel=1e-5)
    assert (model.loc.item(), model.scale.item()) == pytest.approx(dm.scaler)
    t.save_checkpoint(tmp_path / "f.ckpt")
    loaded = LSTMForecaster.load_from_checkpoint(tmp_path / "f.ckpt")  # no data module: scaler from the checkpoint
    assert torch.allclose(loaded(x), model(x))


def test_cli_fits_the_airline_config(csv_file: Path, tmp_path: Path):
    main(["fit", "--config", str(CONFIGS / "lstm_airline.yaml"), "--data.init_args.path", str(csv_file),
          "--trainer.fast_dev_run", "true", "--trainer.default_root_dir", str(tmp_path)])
