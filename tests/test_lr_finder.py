"""Lightning's learning-rate finder works on every zoo model with one optimizer: it finds and sets `lr`."""

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.tuner import Tuner
from torch.utils.data import DataLoader, TensorDataset

import zoo
from zoo.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SINGLE_OPTIMIZER = [n for n in zoo.list_models() if n not in ("dcgan", "pix2pix")]  # Lightning: one optimizer only


@pytest.mark.parametrize("name", SINGLE_OPTIMIZER)
def test_tuner_lr_find_sets_the_models_lr(name, tmp_path):
    torch.manual_seed(0)
    model = zoo.get_model(name, **zoo.model_entry(name).tiny)
    batch = model.example_batch()
    loader = DataLoader(TensorDataset(*[t.repeat(16, *[1] * (t.ndim - 1)) for t in batch]), batch_size=len(batch[0]))
    trainer = L.Trainer(max_epochs=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    found = Tuner(trainer).lr_find(model, train_dataloaders=loader, num_training=30, min_lr=1e-5, max_lr=1.0)
    assert len(found.results["lr"]) > 10 and found.suggestion() is not None
    assert model.hparams.lr == pytest.approx(found.suggestion())


def test_lr_finder_preset_through_the_cli(cifar_pickles, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--config", str(CONFIGS / "cifar_cnn.yaml"), "--config", str(CONFIGS / "callbacks/lr_finder.yaml"),
                 "--trainer.callbacks.num_training_steps", "20", "--data.data_dir", str(cifar_pickles), "--data.val_size", "10",
        "--data.batch_size", "4", "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false"]) == 0
    (last,) = tmp_path.rglob("last.ckpt")
    lr = torch.load(last, weights_only=True)["hyper_parameters"]["lr"]
    assert lr != 0.05  # the finder's suggestion replaced the default
