"""Char LSTM language model (zoo/lstm.py, issue 7) on a tiny synthetic corpus."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import TEXT, TINY

import zoo
from zoo.cli import main
from zoo.datamodules.text import CharTextDataModule, build_vocab
from zoo.lstm import CharLSTM, CharRNN, sample_next

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def trainer(**kwargs) -> L.Trainer:
    defaults = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
                "enable_model_summary": False, "num_sanity_val_steps": 0}
    return L.Trainer(**{**defaults, **kwargs})


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


class SigtermAt(L.Callback):
    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.parametrize("stop_at", [3, 4], ids=["mid-epoch", "epoch-end"])
def test_resume_continues_the_carried_state_exactly(text_file: Path, tmp_path: Path, stop_at: int):
    """Stopped after step 3 (inside an epoch of 4) the resumed run continues the saved state; stopped after step 4
    (the epoch's last) it starts the next epoch from zeros. Either way it ends with the uninterrupted run's weights."""

    def fit(root: Path, *extra: str) -> int:
        return main(["fit", "--model", "CharLSTM", "--data", "CharTextDataModule", "--data.path", str(text_file),
                     "--data.batch_size", "2", "--data.seq_len", "16", "--trainer.max_epochs", "2",
                     "--trainer.limit_train_batches", "4", "--trainer.limit_val_batches", "1",
                     "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
                     "--trainer.callbacks+=LastCheckpoint", *[f"--model.{k}={v}" for k, v in TINY.items()], *extra])

    assert fit(tmp_path / "a") == 0
    assert fit(tmp_path / "b", "--trainer.callbacks+=test_char_lstm.SigtermAt",
               f"--trainer.callbacks.step={stop_at}") == 143
    (path,) = (tmp_path / "b").rglob("last.ckpt")
    assert torch.load(path, weights_only=True)["global_step"] == stop_at
    assert fit(tmp_path / "b", "--ckpt_path", str(path)) == 0
    (ref,), (resumed,) = (tmp_path / "a").rglob("last.ckpt"), (tmp_path / "b").rglob("last.ckpt")
    a, b = (torch.load(p, weights_only=True)["state_dict"] for p in (ref, resumed))
    assert all(torch.equal(a[k], b[k]) for k in a)
