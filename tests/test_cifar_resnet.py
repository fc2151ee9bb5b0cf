"""The flagship's airbench training details: BN-bias decay and Lookahead."""

import csv
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

import zoo
from zoo.datamodules.cifar import CIFAR10DataModule
from zoo.cli import main


def test_bn_biases_get_the_lr_scale_and_the_same_per_step_decay(cifar_folder, tmp_path):
    model = zoo.get_model("cifar_resnet", widths=(8, 16, 16))
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, CIFAR10DataModule(data_dir=str(cifar_folder), batch_size=8, val_size=0))
    opt = trainer.optimizers[0]
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)}
    rest, bn = [g for g in opt.param_groups if not any(id(p) in bn_biases for p in g["params"])], \
        [g for g in opt.param_groups if all(id(p) in bn_biases for p in g["params"])]
    assert len(rest) == 1 and len(bn) == 1
    assert bn[0]["initial_lr"] == 64 * rest[0]["initial_lr"]
    # lr * weight decay, the decay taken per step, is the same for both groups.
    assert abs(bn[0]["weight_decay"] * bn[0]["lr"] - rest[0]["weight_decay"] * rest[0]["lr"]) < 1e-12
    assert rest[0]["weight_decay"] > 0


def test_lookahead_ends_on_the_averaged_weights_and_resumes(cifar_folder, tmp_path):
    torch.manual_seed(0)
    dm = CIFAR10DataModule(data_dir=str(cifar_folder), batch_size=4, val_size=0)
    model = zoo.get_model("cifar_resnet", widths=(8, 16, 16), tta=0)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="last")
    trainer = L.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[ckpt], default_root_dir=tmp_path)
    trainer.fit(model, dm)
    assert trainer.global_step == 30  # 60 images / 4, twice
    slow = model._slow
    for k, v in model.net.state_dict().items():
        if v.is_floating_point():
            assert torch.equal(v, slow[k]), k  # training ends on the average
    assert not any(k.startswith("_slow") for k in model.state_dict())
    saved = torch.load(ckpt.best_model_path, weights_only=True)
    assert set(saved["lookahead"]) == set(slow)
    resumed = zoo.get_model("cifar_resnet", widths=(8, 16, 16), tta=0)
    trainer = L.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[ModelCheckpoint(dirpath=tmp_path / "resumed")], default_root_dir=tmp_path)
    trainer.fit(resumed, dm, ckpt_path=ckpt.best_model_path)
    assert resumed._slow is not None and trainer.global_step == 45


def test_lookahead_off_leaves_sgd_alone(cifar_folder, tmp_path):
    model = zoo.get_model("cifar_resnet", widths=(8, 16, 16), lookahead=False)
    trainer = L.Trainer(max_steps=5, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, CIFAR10DataModule(data_dir=str(cifar_folder), batch_size=8, val_size=0))
    assert model._slow is None


def test_flagship_config_validates_on_its_final_step(cifar_folder, tmp_path):
    """The run ends mid-epoch (430 steps); validation by steps must still see the final Lookahead-averaged weights,
    so the best-val checkpoint can be them."""
    config = Path(__file__).resolve().parents[1] / "configs" / "cifar_resnet.yaml"
    trainer = yaml.safe_load(config.read_text())["trainer"]
    assert trainer["max_steps"] % trainer["val_check_interval"] == 0 and trainer["check_val_every_n_epoch"] is None
    root = tmp_path / "run"
    assert main(["fit", "--config", str(config), "--model.init_args.widths", "[8, 16, 16]",
                 "--data.data_dir", str(cifar_folder), "--data.val_size", "8", "--data.batch_size", "8",
                 "--trainer.max_steps", "10", "--trainer.val_check_interval", "5", "--trainer.accelerator", "cpu",
                 "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                 "--trainer.logger", "CSVLogger", "--trainer.logger.save_dir", str(root),
                 "--trainer.default_root_dir", str(root)]) == 0
    with next(root.rglob("metrics.csv")).open() as f:
        rows = list(csv.DictReader(f))
    val_steps = [int(r["step"]) for r in rows if r.get("val/acc")]
    assert val_steps == [4, 9]  # after steps 5 and 10 (0-based), the second one mid-epoch, at the end of training
