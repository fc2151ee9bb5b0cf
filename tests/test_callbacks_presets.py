"""The callback presets (configs/callbacks/*.yaml): each appends to a model config, they compose in one `zoo fit`,
and every model config stops early on the metric it checkpoints."""

from pathlib import Path

import pytest
import torch
import yaml

from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs" / "callbacks").glob("*.yaml"))


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


@pytest.mark.parametrize("preset", sorted((ROOT / "configs" / "schedules").glob("*.yaml")), ids=lambda p: p.name)
def test_schedule_presets_train_a_model_config(preset, cifar_pickles, tmp_path):
    """configs/schedules/*.yaml stack on a model config and drive its learning rate, stepped per optimizer step."""
    assert main(["fit", "--config", str(ROOT / "configs" / "cifar_cnn.yaml"), "--config", str(preset),
                 "--data.init_args.data_dir", str(cifar_pickles), "--data.init_args.val_size", "10",
                 "--data.init_args.batch_size", "8", "--trainer.max_steps", "4", "--trainer.default_root_dir",
                 str(tmp_path), "--trainer.enable_progress_bar", "false"]) == 0
    (config,) = tmp_path.rglob("config.yaml")
    saved = yaml.safe_load(config.read_text())["model"]["init_args"]
    expected = yaml.safe_load(preset.read_text())["model"]["init_args"]
    assert all(saved[k] == v for k, v in expected.items() if k != "scheduler")
    if "scheduler" in expected:
        assert saved["scheduler"]["class_path"] == expected["scheduler"]["class_path"]
