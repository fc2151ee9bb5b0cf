"""Training callbacks on tiny models and data: mixup/cutmix, distillation, SWA/EMA, early stopping, YAML presets."""

import json
import math
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import yaml
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import EarlyStopping, EMAWeightAveraging, ModelCheckpoint, StochasticWeightAveraging

import zoo
from zoo.callbacks import AveragingCheck, Distillation, MixUpCutMix
from zoo.callbacks.averaging_check import earliest_stop_epoch
from zoo.callbacks.distillation import kd_loss, kd_term, renormalize
from zoo.callbacks.mixup import cutmix, cutmix_box, mix_batch, mixup, soft_targets
from zoo.datamodules.cifar import CIFAR10DataModule
from zoo import hub
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs" / "callbacks").glob("*.yaml"))


def tiny_trainer(tmp_path, callbacks, **kwargs):
    defaults = dict(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=3, limit_val_batches=1,
                    num_sanity_val_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False, default_root_dir=tmp_path)
    return L.Trainer(callbacks=callbacks, **{**defaults, **kwargs})


def tiny_data(folder, batch_size=7):
    return CIFAR10DataModule(data_dir=str(folder), batch_size=batch_size, val_size=10)


def tiny_resnet(**kwargs):  # BatchNorm inside, a constant learning rate, plain SGD (no Lookahead)
    kwargs = {"lookahead": False, **kwargs}
    return zoo.get_model("cifar_resnet", widths=(8, 16, 16), schedule="constant", warmup=0.0, tta=0, **kwargs)


class Spy(L.Callback):
    """Records what training_step fed the loss (through the classifier's training_loss hook)."""

    def __init__(self):
        self.targets = []

    def training_loss(self, trainer, pl_module, x, logits, y, loss):
        self.targets.append(y.detach().clone())
        return loss


# ------------------------------------------------------------------------------------------------- mixup / cutmix
@pytest.mark.parametrize("switch_prob", [0.0, 1.0], ids=["mixup", "cutmix"])
def test_mixed_targets_sum_to_one_on_an_odd_batch(switch_prob):
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4])
    rng = np.random.default_rng(0)
    mx, p = mix_batch(x, y, 10, rng, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob, label_smoothing=0.1)
    assert mx.shape == x.shape and p.shape == (5, 10)
    torch.testing.assert_close(p.sum(1), torch.ones(5))
    assert not torch.equal(mx, x)
    # Each row puts its weight on its own class and its neighbour's (roll by one), smoothing elsewhere.
    assert set(p[1].topk(2).indices.tolist()) == {0, 1} and p[1, 5:].allclose(torch.tensor(0.01))


def test_mixing_maths_by_hand():
    x, p = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 4, 4), soft_targets(torch.tensor([0, 1, 2]), 3)
    mx, mp = mixup(x, p, 0.75)
    assert mx[1, 0, 0, 0] == 0.75 * 1 + 0.25 * 0 and mp[0].tolist() == [0.75, 0.0, 0.25]
    cx, cp = cutmix(x, p, (0, 2, 0, 4))  # the top half of each image comes from its neighbour
    assert cx[0, 0, 0, 0] == 2 and cx[0, 0, 3, 0] == 0 and cp[0].tolist() == [0.5, 0.0, 0.5]
    top, bottom, left, right = cutmix_box(32, 32, 0.75, np.random.default_rng(1))
    assert 0 <= top < bottom <= 32 and (bottom - top) * (right - left) <= 16 * 16
    torch.testing.assert_close(soft_targets(torch.tensor([1]), 4, 0.2), torch.tensor([[0.05, 0.85, 0.05, 0.05]]))


def test_mixup_callback_feeds_soft_targets_and_restores_its_rng(cifar_folder, tmp_path):
    torch.manual_seed(0)  # the loader's shuffle: which images share a batch
    mix, spy = MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, seed=3), Spy()
    model = zoo.get_model("cifar_cnn")
    trainer = tiny_trainer(tmp_path, [mix, spy])
    trainer.fit(model, datamodule=tiny_data(cifar_folder))  # batches of 7: odd
    assert len(spy.targets) == 3 and all(t.shape == (7, 10) for t in spy.targets)
    assert all(torch.allclose(t.sum(1), torch.ones(7)) for t in spy.targets)
    # A row whose neighbour has the same class stays one-hot after mixing, so look for any mixed row.
    assert any((t.amax(1) < 1).any() for t in spy.targets), "nothing was mixed"
    assert 0 <= float(trainer.callback_metrics["train/acc"]) <= 1  # against the dominant label
    # The generator's state round-trips, so a resumed run draws what an unbroken one would.
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["callbacks"]
    fresh = MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, seed=99)
    fresh.load_state_dict(next(v for k, v in state.items() if k.startswith("MixUpCutMix")))
    assert fresh.rng.random() == mix.rng.random()


# ----------------------------------------------------------------------------------------------- distillation
def test_kd_loss_equals_a_hand_computation():
    s, t, y, T, a = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.0, 3.0, 1.0]]), torch.tensor([1]), 2.0, 0.7
    softmax = lambda v: [math.exp(e) / sum(math.exp(f) for f in v) for e in v]  # noqa: E731
    ps, pt = softmax([0.5, 1.0, 0.0]), softmax([0.0, 1.5, 0.5])  # logits / T
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt)) * T**2
    ce = -math.log(softmax([1.0, 2.0, 0.0])[1])
    assert kd_term(s, t, T).item() == pytest.approx(kl, rel=1e-6)
    assert kd_loss(s, t, y, T, a).item() == pytest.approx(a * kl + (1 - a) * ce, rel=1e-6)
    assert kd_term(t, t, T).item() == pytest.approx(0.0, abs=1e-7)
    x = torch.randn(2, 3, 4, 4)
    back = renormalize(renormalize(x, (0.5,) * 3, (0.2,) * 3, (0.1, 0.2, 0.3), (1, 2, 3)), (0.1, 0.2, 0.3), (1, 2, 3),
                       (0.5,) * 3, (0.2,) * 3)
    torch.testing.assert_close(back, x)


@pytest.fixture
def teacher_card(cifar_folder, tmp_path, monkeypatch):
    """A zoo checkpoint (card + safetensors) of a 2-step classic CNN, as in test_hub.py."""
    monkeypatch.setenv("ZOO_DATA_DIR", str(cifar_folder))
    root = tmp_path / "teacher_run"
    assert main(["fit", "--model", "CifarCNN", "--data", "CIFAR10DataModule", "--data.val_size", "10",
                 "--data.batch_size", "16", "--trainer.max_steps", "2", "--trainer.default_root_dir", str(root),
                 "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false"]) == 0
    (ckpt,) = root.glob("cifarcnn/version_0/checkpoints/*.ckpt")
    return hub.export(ckpt, "teacher", tmp_path / "published", test=False)


def test_distillation_keeps_the_teacher_frozen_and_out_of_the_student(teacher_card, cifar_folder, tmp_path):
    card = json.loads(teacher_card.read_text())
    card["preprocessing"]["mean"] = [0.5, 0.5, 0.5]  # a teacher trained with another normalisation
    teacher_card.write_text(json.dumps(card))
    kd, mix = Distillation(str(teacher_card), temperature=3.0, alpha=0.6), MixUpCutMix()
    student = zoo.get_model("cifar_cnn")
    trainer = tiny_trainer(tmp_path, [mix, kd], enable_checkpointing=True)
    trainer.fit(student, datamodule=tiny_data(cifar_folder))
    teacher = kd.teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    torch.testing.assert_close(teacher.state_dict(), zoo.load(teacher_card).state_dict(), rtol=0, atol=0)
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}
    assert not any(m is teacher for m in student.modules())
    saved = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert set(saved["state_dict"]) == set(student.state_dict())
    assert "train/kd" in trainer.callback_metrics
    # The batch is re-standardised for the teacher: student mean/std -> (0.5, 0.5, 0.5)/its std.
    assert kd._renorm is not None and kd._renorm[2] == (0.5, 0.5, 0.5)
    # The hook blends the student's own loss; with the model's plain cross-entropy that is kd_loss.
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits, student.log = student(x), lambda *args, **kwargs: None  # outside a loop there is nowhere to log
    got = kd.training_loss(trainer, student, x, logits, y, F.cross_entropy(logits, y))
    torch.testing.assert_close(got, kd_loss(logits, kd.teacher_logits(x), y, 3.0, 0.6))


# ----------------------------------------------------------------------------------------------- weight averaging
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


# ----------------------------------------------------------------------------------------------- YAML presets
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_callback_presets_append_to_a_model_config(preset, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs" / "cifar_resnet.yaml"), "--config", str(preset),
              "--print_config"])
    out = capsys.readouterr().out
    assert "ModelCheckpoint" in out and "LearningRateMonitor" in out  # appended, not replaced


def test_presets_compose_in_one_cli_fit(teacher_card, cifar_folder, tmp_path):
    kd = tmp_path / "kd.yaml"
    kd.write_text((ROOT / "configs/callbacks/distillation.yaml").read_text()
                  .replace("cifar_resnet_cifar10", str(teacher_card)))
    presets = ["mixup.yaml", "ema.yaml"]  # cifar_cnn.yaml brings its EarlyStopping
    configs = [a for p in presets for a in ("--config", str(ROOT / "configs/callbacks" / p))]
    root = tmp_path / "run"
    assert main(["fit", "--config", str(ROOT / "configs/cifar_cnn.yaml"), *configs, "--config", str(kd),
                 "--data.data_dir", str(cifar_folder), "--data.val_size", "10", "--data.batch_size", "9",
                 "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2", "--trainer.accelerator", "cpu",
                 "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root)]) == 0
    last = torch.load(next(root.rglob("last.ckpt")), weights_only=True)
    names = " ".join(last["callbacks"])
    for name in ("MixUpCutMix", "Distillation", "EarlyStopping", "EMAWeightAveraging"):
        assert name in names
    assert "current_model_state" in last  # the EMA is the checkpoint's state_dict
    assert not any(k.startswith("teacher") for k in last["state_dict"])


@pytest.mark.parametrize("config", sorted(p.stem for p in (ROOT / "configs").glob("*.yaml")))
def test_each_model_config_stops_early_on_the_metric_it_checkpoints(config):
    trainer = yaml.safe_load((ROOT / "configs" / f"{config}.yaml").read_text())["trainer"]
    args = [c.get("init_args", {}) for c in trainer["callbacks"]]
    kinds = [c["class_path"] for c in trainer["callbacks"]]
    best = [(a["monitor"], a.get("mode", "min")) for k, a in zip(kinds, args) if k == "ModelCheckpoint" and "monitor" in a]
    stops = [(a["monitor"], a.get("mode", "min")) for k, a in zip(kinds, args) if k == "EarlyStopping"]
    assert stops == best  # one EarlyStopping, same metric and mode; none where nothing is validated (the DCGAN)
