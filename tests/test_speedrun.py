"""The flagship's airbench training details: BN-bias decay and Lookahead."""

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

import zoo
from datamodules.cifar import CIFAR10DataModule


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
                        enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(resumed, dm, ckpt_path=ckpt.best_model_path)
    assert resumed._slow is not None and trainer.global_step == 45


def test_lookahead_off_leaves_sgd_alone(cifar_folder, tmp_path):
    model = zoo.get_model("cifar_resnet", widths=(8, 16, 16), lookahead=False)
    trainer = L.Trainer(max_steps=5, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, CIFAR10DataModule(data_dir=str(cifar_folder), batch_size=8, val_size=0))
    assert model._slow is None
