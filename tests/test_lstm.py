"""Char LSTM language model, LSTM forecaster and their data modules (issue 7), on tiny synthetic files."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch

import zoo
from zoo.datamodules.text import CharTextDataModule, as_streams, build_vocab, decode, encode, split_text
from zoo.datamodules.timeseries import TimeSeriesDataModule, read_column
from zoo.cli import main
from zoo.forecaster import LSTMForecaster, seasonal_naive
from zoo.lstm import CharLSTM, CharRNN, sample_next

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
from conftest import SHARED_DATA as SHARED  # noqa: E402
TEXT = "".join(f"{i % 7} To be, or not to be: that is the question.\nWhether 'tis nobler in the mind to suffer!\n"
               for i in range(60))
TINY = {"embed_dim": 8, "hidden_size": 16, "num_layers": 2, "dropout": 0.0}


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def csv_file(tmp_path: Path) -> Path:
    """96 months of trend + seasonality + noise, in the airline file's format."""
    g = torch.Generator().manual_seed(0)
    t = torch.arange(96.0)
    values = 100 + 2 * t + 20 * torch.sin(2 * math.pi * t / 12) + torch.randn(96, generator=g)
    rows = [f"{1949 + i // 12}-{i % 12 + 1:02d}-01,{v:.1f}" for i, v in enumerate(values.tolist())]
    path = tmp_path / "series.csv"
    path.write_text("Month,passengers\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def trainer(**kwargs) -> L.Trainer:
    defaults = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                "enable_model_summary": False, "num_sanity_val_steps": 0}
    return L.Trainer(**{**defaults, **kwargs})


# --------------------------------------------------------------------------------------------------- text data
def test_vocabulary_round_trip_and_split():
    train, val, test = split_text(TEXT, (0.9, 0.05, 0.05))
    assert train + val + test == TEXT and len(train) == int(0.9 * len(TEXT))
    vocab = build_vocab(train)
    assert vocab == "".join(sorted(set(train)))
    assert decode(encode(test, vocab), vocab) == test
    with pytest.raises(ValueError, match="not in the vocabulary"):
        encode("to be€", vocab)


def test_batches_are_contiguous_streams(text_file: Path):
    dm = CharTextDataModule(str(text_file), batch_size=3, seq_len=10)
    dm.setup("fit")
    train = TEXT[: int(0.9 * len(TEXT))]
    assert dm.vocab == build_vocab(train)
    batches = list(CharTextDataModule._loader(dm, "val"))  # no random offset outside training
    x0, y0 = batches[0]
    assert x0.shape == (3, 10) and torch.equal(x0[:, 1:], y0[:, :-1])  # targets are the inputs shifted by one
    for (x, y), (nx, _) in itertools.pairwise(batches):
        assert torch.equal(nx[:, 0], y[:, -1])  # row b of batch i+1 continues row b of batch i
    # Laid end to end, each row is one contiguous piece of the validation text; every character is scored.
    rows = [decode(torch.cat([batches[0][0][b, :1]] + [y[b] for _, y in batches]), dm.vocab) for b in range(3)]
    val = TEXT[len(train) : len(train) + int(0.05 * len(TEXT))]
    assert "".join(rows) == val[: 3 * (len(val) // 3)]


def test_missing_corpus_names_the_path(tmp_path: Path):
    dm = CharTextDataModule("tinyshakespeare/input.txt", data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "tinyshakespeare" / "input.txt")) as err:
        dm.setup("fit")
    assert "curl" in str(err.value)


# -------------------------------------------------------------------------------------------- char LSTM model
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_carried_state_equals_one_long_pass(cell: str):
    """TBPTT changes only where gradients stop: two chunks with a carried state give the logits of one long pass."""
    torch.manual_seed(0)
    net = CharRNN(11, cell, 8, 16, 2, 0.0, False).eval()
    ids = torch.randint(11, (2, 12))
    full, _ = net(ids)
    first, state = net(ids[:, :5])
    second, _ = net(ids[:, 5:], state)
    assert torch.allclose(torch.cat([first, second], 1), full, atol=1e-6)
    fresh, _ = net(ids[:, 5:])
    assert not torch.allclose(fresh, full[:, 5:], atol=1e-3)  # the state does carry information


class RecordState(L.Callback):
    def __init__(self):
        self.events: list[tuple[str, int, object]] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.events.append(("start", batch_idx, module.hidden["train"]))

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.events.append(("end", batch_idx, module.hidden["train"]))


def test_state_carries_across_steps_detached_and_resets(text_file: Path):
    torch.manual_seed(0)
    dm = CharTextDataModule(str(text_file), batch_size=2, seq_len=64, random_offset=False)
    model, record = CharLSTM(**TINY), RecordState()
    # Validation in the middle of the epoch must not disturb the training streams' state.
    trainer(max_epochs=2, callbacks=[record], val_check_interval=2, gradient_clip_val=1.0).fit(model, dm)
    steps = len(list(dm.train_dataloader()))
    assert len(record.events) == 2 * 2 * steps and model.hparams.vocab == dm.vocab
    for i, (kind, idx, state) in enumerate(record.events):
        if kind == "start" and idx == 0:
            assert state is None  # reset at every epoch start
        elif kind == "start":
            assert state is record.events[i - 1][2]  # exactly the previous step's final state
        else:
            h, c = state
            assert h.shape == c.shape == (2, 2, 16)
            assert h.grad_fn is None and not h.requires_grad and c.grad_fn is None  # detached: truncated BPTT


def test_every_parameter_gets_a_gradient():
    model = zoo.get_model("char_lstm", vocab="abc\n", tie_weights=True, embed_dim=16, hidden_size=16, num_layers=2)
    x = torch.randint(4, (3, 7))
    loss = model._step((x, x.roll(-1, 1)), "train")
    loss.backward()
    assert torch.isfinite(loss) and model.net.decoder.weight is model.net.embed.weight
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_generation_is_deterministic_under_a_seed():
    torch.manual_seed(0)
    model = CharLSTM(vocab=build_vocab(TEXT), **TINY)
    a = model.generate("To be", 60, temperature=1.0, seed=3)
    assert len(a) == 60 and set(a) <= set(model.hparams.vocab)
    assert model.generate("To be", 60, temperature=1.0, seed=3) == a
    assert model.generate("To be", 60, temperature=1.0, seed=4) != a
    torch.manual_seed(1)
    b = model.generate("To be", 60, temperature=1.0)
    torch.manual_seed(1)
    assert model.generate("To be", 60, temperature=1.0) == b  # the global seed also fixes it
    assert model.generate("To be", 30, temperature=0) == model.generate("To be", 30, top_k=1, seed=9)  # greedy
    with pytest.raises(ValueError, match="unknown"):
        model.generate("Zebra", 5)


def test_top_k_sampling_stays_in_the_top_k():
    logits = torch.tensor([[0.0, 5.0, 4.0, 3.0, 6.0, 1.0]]).repeat(200, 1)
    ids = sample_next(logits, 2.0, 3, torch.Generator().manual_seed(0))
    assert set(ids.tolist()) == {1, 2, 4}


def test_checkpoint_rebuilds_without_the_corpus(text_file: Path, tmp_path: Path):
    torch.manual_seed(0)
    dm = CharTextDataModule(str(text_file), batch_size=2, seq_len=32)
    model = CharLSTM(**TINY)
    t = trainer(max_epochs=1, limit_val_batches=0)
    t.fit(model, dm)
    t.save_checkpoint(tmp_path / "lm.ckpt")
    text_file.unlink()  # the checkpoint alone must do
    loaded = CharLSTM.load_from_checkpoint(tmp_path / "lm.ckpt")
    assert loaded.hparams.vocab == dm.vocab
    assert loaded.generate("To", 40, seed=0) == model.generate("To", 40, seed=0)


def test_cli_fit_test_predict_prints_text(text_file: Path, tmp_path: Path, capsys):
    """The real config, shrunk: fit one epoch, then `zoo test` and `zoo predict` from the checkpoint alone."""
    args = ["--config", str(CONFIGS / "lstm_tinyshakespeare.yaml"), "--data.init_args.path", str(text_file),
            "--data.init_args.batch_size", "2", "--data.init_args.seq_len", "32",
            "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]
    args += [f"--model.init_args.{k}={v}" for k, v in TINY.items()]
    main(["fit", *args, "--trainer.max_epochs", "1"])
    ckpt = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["vocab"] == build_vocab(TEXT[: int(0.9 * len(TEXT))])
    capsys.readouterr()
    main(["test", *args, "--ckpt_path", str(ckpt)])
    assert "test/bpc" in capsys.readouterr().out
    text_file.unlink()  # predicting needs only the prompts and the checkpoint
    main(["predict", *args, "--ckpt_path", str(ckpt), "--data.init_args.sample_length", "25",
          "--data.init_args.prompts", '["To be"]'])
    out = capsys.readouterr().out
    sample = out[out.index("To be") :].split("\n" + "-" * 80)[0]
    assert len(sample) == len("To be") + 25


def test_cpu_config_exports_a_card_that_evaluate_reproduces(text_file: Path, tmp_path: Path):
    """The 3-minute CPU config, shrunk: fit, `zoo export` (card with the corpus and its splits), load, evaluate."""
    from zoo import hub

    main(["fit", "--config", str(CONFIGS / "lstm_tinyshakespeare_cpu.yaml"), "--data.init_args.path", str(text_file),
          "--data.init_args.batch_size", "2", "--data.init_args.seq_len", "32", "--trainer.max_steps", "6",
          "--trainer.val_check_interval", "3", "--trainer.default_root_dir", str(tmp_path),
          "--trainer.enable_progress_bar", "false", *[f"--model.init_args.{k}={v}" for k, v in TINY.items()]])
    ckpt = next(tmp_path.rglob("step*.ckpt"))  # the best val/loss checkpoint
    card_path = hub.export(ckpt, "tiny_lm", tmp_path / "published")
    card = json.loads(card_path.read_text())
    assert card["dataset"] == "corpus.txt" and card["train_split"] == "the first 90% of the characters"
    assert card["metrics"]["test/loss"] > 0 and card["hparams"]["vocab"] == build_vocab(TEXT[: int(0.9 * len(TEXT))])
    published = zoo.load(str(card_path))
    assert published.generate("To", 30, seed=0) == CharLSTM.load_from_checkpoint(ckpt).generate("To", 30, seed=0)
    for metric, expected, measured in hub.evaluate(str(card_path), accelerator="cpu"):
        assert measured == pytest.approx(expected, rel=1e-5), metric


# ------------------------------------------------------------------------------------------------- forecaster
def test_seasonal_naive_repeats_the_last_season():
    history = torch.arange(30.0).view(1, 30)  # value = time index; the forecast origin is t = 30
    assert seasonal_naive(history, 1, 12).tolist() == [[18.0]]  # y[30 - 12]
    assert seasonal_naive(history, 14, 12).tolist() == [[18.0 + j % 12 for j in range(14)]]  # wraps after a season
    with pytest.raises(ValueError, match="too short"):
        seasonal_naive(history[:, :10], 1, 12)


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


# ---------------------------------------------------------------------------------------------- real data
@pytest.mark.skipif(not (SHARED / "timeseries/airline-passengers.csv").is_file(), reason="staged data absent")
def test_real_airline_series_and_its_baseline():
    dm = TimeSeriesDataModule(str(SHARED / "timeseries/airline-passengers.csv"), column="passengers")
    dm.setup("fit")
    assert len(dm.series) == 144 and dm.series.sum().item() == 40363
    x, y = dm.datasets["test"].tensors
    assert y.shape == (24, 1) and torch.equal(y[:, 0], dm.series[-24:])
    naive = seasonal_naive(x, 1, 12)
    assert torch.equal(naive[:, 0], dm.series[-36:-12])


@pytest.mark.skipif(not (SHARED / "tinyshakespeare/input.txt").is_file(), reason="staged data absent")
def test_real_tinyshakespeare_vocabulary():
    dm = CharTextDataModule("tinyshakespeare/input.txt", data_dir=str(SHARED))
    dm.setup("fit")
    assert len(dm.vocab) == 65 and dm.vocab[0] == "\n"
    assert sum(s.numel() for s in dm.streams.values()) > 0.999 * 1_115_394  # < 64 characters per split dropped
    assert as_streams(torch.arange(10), 3).tolist() == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
