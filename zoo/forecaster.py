"""LSTM (or GRU) forecaster for a univariate time series, measured against the seasonal-naive forecast.

Usage:
    model = zoo.get_model("lstm_forecaster", horizon=1)   # or: zoo fit --config configs/lstm_airline.yaml
    forecast = model(history)                             # (B, window) -> (B, horizon), in the series' units

The model standardises its input with the training mean and standard deviation, which it keeps in buffers (so a
checkpoint forecasts without the data), reads the window with a recurrent net and predicts each future value as a
change from the last observed one, then unscales. MAE and RMSE are logged in the series' units next to the
seasonal-naive baseline's (each value forecast as the last observed value one season earlier), on the same targets.
"""

from __future__ import annotations

import math
from typing import Literal

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from zoo import register_model
from zoo.lstm import recurrent
from zoo.optim import OptimizerName, configure_optimizers


def seasonal_naive(history: torch.Tensor, horizon: int, season: int) -> torch.Tensor:
    """Seasonal-naive forecast (B, horizon) from history (B, W): step ``j`` (1-based) repeats the last observed value
    of the same season, ``history[:, W - 1 + j - season * ceil(j / season)]``."""
    w = history.shape[-1]
    idx = [w - 1 + j - season * math.ceil(j / season) for j in range(1, horizon + 1)]
    if idx[0] < 0:
        raise ValueError(f"A window of {w} values is too short for a seasonal-naive forecast with season {season}.")
    return history[..., idx]


class SeriesRNN(nn.Module):
    """Recurrent net over a standardised window (B, W) -> changes (B, horizon) from the window's last value."""

    def __init__(self, cell: str, hidden_size: int, num_layers: int, dropout: float, horizon: int):
        super().__init__()
        self.rnn = recurrent(cell, 1, hidden_size, num_layers, dropout)
        self.head = nn.Linear(hidden_size, horizon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x.unsqueeze(-1))  # (B, W, hidden); each window starts from a zero state
        return self.head(out[:, -1])  # (B, horizon)


@register_model("lstm_forecaster", description="LSTM/GRU univariate time-series forecaster vs seasonal naive",
                tiny={"hidden_size": 8})
class LSTMForecaster(L.LightningModule):
    """Forecasts the next ``horizon`` values of a series from a window of its past, with a recurrent net.

    Args:
        horizon: values forecast at once; must equal the data module's ``horizon``.
        season: season length of the seasonal-naive baseline (12 for monthly data).
        cell: "lstm" or "gru".
        hidden_size: recurrent state size per layer.
        num_layers: stacked recurrent layers.
        dropout: between recurrent layers.
        lr: learning rate (constant).
        weight_decay: weight decay.
        optimizer: a ``zoo.optim`` name ("adam", "adamw", "sgd", ...).
    """

    def __init__(
        self,
        horizon: int = 1,
        season: int = 12,
        cell: Literal["lstm", "gru"] = "lstm",
        hidden_size: int = 64,
        num_layers: int = 1,
        dropout: float = 0.0,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        optimizer: OptimizerName = "adam",
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = SeriesRNN(cell, hidden_size, num_layers, dropout, horizon)
        # The scaler travels in the state dict; `fitted` tells setup() whether to take it from the data.
        self.register_buffer("loc", torch.tensor(0.0))
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("fitted", torch.tensor(False))
        names = ("mae", "rmse", "naive_mae", "naive_rmse")
        metric = lambda n: MeanAbsoluteError() if n.endswith("mae") else MeanSquaredError(squared=False)
        self.metrics = nn.ModuleDict({f"{s}_{n}": metric(n) for s in ("val", "test") for n in names})

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule  # setup() is a Trainer hook
        if dm is None:
            return
        if getattr(dm.hparams, "horizon", self.hparams.horizon) != self.hparams.horizon:
            raise ValueError(f"The model forecasts horizon={self.hparams.horizon} values but the data module serves "
                             f"horizon={dm.hparams.horizon}; set both to the same value.")
        if not bool(self.fitted) and getattr(dm, "scaler", None) is not None:
            self.fit_scaler(*dm.scaler)

    @torch.no_grad()
    def fit_scaler(self, mean: float, std: float) -> None:
        """Standardise inputs with ``mean`` and ``std`` (the training part's) from now on, checkpoints included."""
        self.loc.fill_(mean)
        self.scale.fill_(std if std > 0 else 1.0)
        self.fitted.fill_(True)

    def example_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A random training batch: (3 histories of two seasons, their next ``horizon`` values)."""
        h = self.hparams
        return torch.randn(3, 2 * h.season) * 10 + 100, torch.randn(3, h.horizon) + 100

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """History (B, window) -> forecast (B, horizon), both in the series' units."""
        z = (history - self.loc) / self.scale
        return (z[:, -1:] + self.net(z)) * self.scale + self.loc

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.mse_loss(self(x) / self.scale, y / self.scale)  # MSE in standardised units
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        x, y = batch
        forecast, naive = self(x), seasonal_naive(x, self.hparams.horizon, self.hparams.season)
        self.log(f"{stage}/loss", F.mse_loss(forecast / self.scale, y / self.scale), batch_size=len(x))
        for name, pred in (("", forecast), ("naive_", naive)):
            for kind in ("mae", "rmse"):
                metric = self.metrics[f"{stage}_{name}{kind}"]
                metric(pred, y)
                self.log(f"{stage}/{name}{kind}", metric, prog_bar=stage == "val" and not name)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Forecast (B, horizon) in the series' units after each history window."""
        return self(batch[0] if isinstance(batch, (tuple, list)) else batch)

    def configure_optimizers(self):
        return configure_optimizers(self, self.parameters())
