"""Weight averaging with Lightning's EMA and SWA callbacks, AveragingCheck (callbacks/averaging_check.py) against
an EarlyStopping that can stop first, and EarlyStopping's state across a resume."""

import warnings

import lightning as L
import pytest
import torch
from conftest import tiny_data, tiny_trainer
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint, StochasticWeightAveraging

import zoo
from zoo.callbacks import AveragingCheck
from zoo.callbacks.averaging_check import earliest_stop_epoch


def tiny_resnet(**kwargs):  # BatchNorm inside, a constant learning rate, plain SGD (no Lookahead)
    kwargs = {"lookahead": False, **kwargs}
    return zoo.get_model("cifar_resnet", widths=(8, 16, 16), schedule="constant", warmup=0.0, tta=0, **kwargs)


class Weights(L.Callback):
    """Records the head weight after each training step and at the first validation batch."""

    def __init__(self):
        self.after_step, self.validated, self.at_epoch_start = [], [], {}

    def on_train_epoch_start(self, trainer, pl_module):
        self.at_epoch_start[trainer.current_epoch] = pl_module.net.head.weight.detach().clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.after_step.append(pl_module.net.head.weight.detach().clone())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.validated.append(pl_module.net.head.weight.detach().clone())


def test_ema_is_what_gets_validated_checkpointed_and_loaded(cifar_folder, tmp_path):
    ema, rec = EMAWeightAveraging(decay=0.5), Weights()
    model = tiny_resnet()
    trainer = tiny_trainer(tmp_path, [ema, rec], enable_checkpointing=True)
    trainer.fit(model, datamodule=tiny_data(cifar_folder))
    expected = rec.after_step[0]
    for w in rec.after_step[1:]:
        expected = 0.5 * expected + 0.5 * w
    torch.testing.assert_close(rec.validated[0], expected)
    assert not torch.allclose(expected, rec.after_step[-1])
    torch.testing.assert_close(model.net.head.weight, expected)  # copied in at the end of training
    (ckpt,) = tmp_path.rglob("*.ckpt")
    saved = torch.load(ckpt, weights_only=True)
    torch.testing.assert_close(saved["state_dict"]["net.head.weight"], expected)
    torch.testing.assert_close(saved["current_model_state"]["net.head.weight"], rec.after_step[-1])
    torch.testing.assert_close(zoo.load(ckpt, model="cifar_resnet").net.head.weight, expected)


def test_swa_average_with_recomputed_batchnorm_ends_in_the_model_and_last_ckpt(cifar_folder, tmp_path):
    swa, rec = StochasticWeightAveraging(swa_lrs=0.01, swa_epoch_start=2), Weights()
    model = tiny_resnet()
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny_trainer(tmp_path, [swa, rec, ckpt_cb], max_epochs=3, limit_train_batches=2,
                           enable_checkpointing=True)
    trainer.fit(model, datamodule=tiny_data(cifar_folder))
    # Lightning's SWA averages the weights at the start of epochs swa_start..max_epochs-1 (0-based 1 and 2).
    expected = (rec.at_epoch_start[1] + rec.at_epoch_start[2]) / 2
    torch.testing.assert_close(model.net.head.weight, expected)
    bn = model.net.groups[0].norm1
    assert bn.momentum == 0.4 and int(bn.num_batches_tracked) == 2  # recomputed over one extra epoch (2 batches)
    torch.testing.assert_close(rec.validated[-1], expected)  # the extra epoch's validation sees the average
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    torch.testing.assert_close(last, model.state_dict())


def test_averaging_check_warns_when_early_stopping_can_come_first(cifar_folder, tmp_path):
    assert earliest_stop_epoch(patience=3) == 3 and earliest_stop_epoch(3, check_every_n_epoch=2) == 7
    assert earliest_stop_epoch(3, min_epochs=10) == 9 and earliest_stop_epoch(3, has_threshold=True) == 0
    callbacks = [EarlyStopping("train/loss", patience=1), StochasticWeightAveraging(swa_lrs=0.01),
                 EMAWeightAveraging(update_starting_at_step=1000), AveragingCheck()]
    trainer = tiny_trainer(tmp_path, callbacks, max_epochs=20, max_steps=1)
    with pytest.warns(UserWarning) as record:
        trainer.fit(tiny_resnet(), datamodule=tiny_data(cifar_folder))
    messages = " ".join(str(w.message) for w in record)
    assert "StochasticWeightAveraging only puts its average" in messages
    assert "before EMAWeightAveraging first updates" in messages
    quiet = tiny_trainer(tmp_path, [EarlyStopping("train/loss", patience=50), EMAWeightAveraging(),
                                    AveragingCheck()], max_epochs=20, max_steps=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        quiet.fit(tiny_resnet(), datamodule=tiny_data(cifar_folder))
    assert not [w for w in record if "EarlyStopping can stop" in str(w.message)]


# ----------------------------------------------------------------------------------------------- early stopping
def test_early_stopping_state_survives_a_resume(cifar_folder, tmp_path):
    es = EarlyStopping("val/acc", mode="max", patience=10)
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = tiny_trainer(tmp_path, [es, ckpt_cb], max_epochs=2, limit_train_batches=1, enable_checkpointing=True)
    trainer.fit(zoo.get_model("cifar_cnn"), datamodule=tiny_data(cifar_folder))
    resumed_es = EarlyStopping("val/acc", mode="max", patience=10)
    resumed = tiny_trainer(tmp_path, [resumed_es, ModelCheckpoint(dirpath=tmp_path / "ckpt2")], max_epochs=3,
                           limit_train_batches=1, enable_checkpointing=True)
    restored = {}
    resumed_es.on_train_start = lambda trainer, pl_module: restored.update(resumed_es.state_dict())
    resumed.fit(zoo.get_model("cifar_cnn"), datamodule=tiny_data(cifar_folder),
                ckpt_path=tmp_path / "ckpt" / "last.ckpt")
    assert restored["best_score"] == es.best_score and restored["wait_count"] == es.wait_count
