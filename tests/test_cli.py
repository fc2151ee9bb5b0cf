"""The `zoo` command end to end on tiny data in the real formats: fit, configs, DDP, bf16, list."""

import subprocess
import sys
from pathlib import Path

import pytest

from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
MODEL_CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
TRAINER_PRESETS = sorted((ROOT / "configs" / "trainer").glob("*.yaml"))


def tiny_fit_args(data_dir, tmp_path, *extra):
    return ["fit", "--model", "CifarCNN", "--data", "CIFAR10DataModule", "--data.data_dir", str(data_dir),
            "--data.val_size", "10", "--data.batch_size", "16", "--trainer.default_root_dir", str(tmp_path),
            "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", *extra]


def test_fast_dev_run_with_short_names(cifar_pickles, tmp_path):
    assert main(tiny_fit_args(cifar_pickles, tmp_path, "--trainer.fast_dev_run", "true")) == 0


@pytest.mark.parametrize("config", MODEL_CONFIGS, ids=lambda p: p.name)
def test_every_model_config_parses(config, capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(config), "--print_config"])
    assert done.value.code in (0, None)
    assert "class_path" in capsys.readouterr().out


@pytest.mark.parametrize("preset", TRAINER_PRESETS, ids=lambda p: p.name)
def test_trainer_presets_stack_on_a_model_config(preset, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(ROOT / "configs" / "cifar_cnn.yaml"), "--config", str(preset), "--print_config"])
    assert "precision" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "expected"), [
    (["--model.dropot", "0.1"], "model: CifarCNN has no option 'dropot'; its options: zoo fit --model.help CifarCNN"),
    (["--data.val_sise", "0"], ("data: CIFAR10DataModule has no option 'val_sise'; its options: "
                                "zoo fit --data.help CIFAR10DataModule")),
    (["--model.lr", "abc"], "model.lr (CifarCNN): expected float, got 'abc'"),
    (["--trainer.max_epochs", "abc"], "trainer.max_epochs: expected int, got 'abc'; see zoo fit --help"),
    (["--data.flip", "maybe"], "data.flip (CIFAR10DataModule): expected bool or 'alternate', got 'maybe'"),
    (["--trainer.precision", "17"], "trainer.precision: expected one of 64, 32, 16, "),
    (["--no_such_option", "3"], "unrecognized arguments: --no_such_option 3"),
])
def test_wrong_option_or_value_is_one_line_naming_it(args, expected, capsys, monkeypatch):
    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model", "CifarCNN", "--data", "CIFAR10DataModule", *args, "--print_config"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("zoo: error: ") and err.count("\n") == 1, err  # one line, no usage block
    assert expected in err


def test_the_help_command_the_error_names_lists_the_options(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--data.help", "CIFAR10DataModule"])
    assert done.value.code in (0, None)
    assert "--data.val_size" in capsys.readouterr().out


def test_options_without_a_model_say_choose_one_first(capsys, monkeypatch):
    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model.dropout", "0.1", "--print_config"])
    assert done.value.code == 2
    assert "model options given but no model chosen: add --model NAME" in capsys.readouterr().err


def test_wrong_key_in_a_config_file_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    config = tmp_path / "typo.yaml"
    config.write_text("model:\n  class_path: VAE\n  init_args:\n    latent: 8\n")
    with pytest.raises(SystemExit) as done:
        main(["validate", "--config", str(config), "--print_config"])
    assert done.value.code == 2
    assert capsys.readouterr().err == ("zoo: error: model: VAE has no option 'latent'; its options: zoo validate "
                                       "--model.help VAE (ZOO_DEBUG=1 shows the full report).\n")


@pytest.mark.parametrize(("text", "expected"), [
    ("trainer:\n  max_epoch: 3\n", "trainer has no option 'max_epoch'; the accepted ones: zoo test --help"),
    ("trainerr:\n  max_epochs: 3\n", "unknown option 'trainerr.max_epochs'; the accepted ones: zoo test --help"),
])
def test_misspelt_section_or_trainer_key_is_one_line(text, expected, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ZOO_DEBUG", raising=False)
    config = tmp_path / "typo.yaml"
    config.write_text(text)
    with pytest.raises(SystemExit) as done:
        main(["test", "--config", str(ROOT / "configs" / "cifar_cnn.yaml"), "--config", str(config), "--print_config"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err


def test_zoo_debug_shows_jsonargparse_full_report(capsys, monkeypatch):
    monkeypatch.setenv("ZOO_DEBUG", "1")
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model", "CifarCNN", "--model.dropot", "0.1", "--print_config"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and "Option 'dropot' is not accepted" in err


def test_bf16_mixed_fit_on_cpu(cifar_folder, tmp_path):
    assert main(tiny_fit_args(cifar_folder, tmp_path, "--trainer.fast_dev_run", "2",
                              "--trainer.precision", "bf16-mixed")) == 0


def test_ddp_two_processes_on_cpu(cifar_folder, tmp_path):
    args = tiny_fit_args(cifar_folder, tmp_path, "--trainer.strategy", "ddp", "--trainer.devices", "2",
                         "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--model", "CifarResNet",
                         "--model.widths", "[8, 16, 16]")
    run = subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    ckpts = list(tmp_path.glob("cifarresnet/version_*/checkpoints/*.ckpt"))
    assert ckpts, "rank 0 saved no checkpoint"


def test_zoo_list_is_readable_at_80_columns_and_has_json():
    run = subprocess.run([sys.executable, "-m", "zoo", "list"], capture_output=True, text=True, timeout=120,
                         env={"COLUMNS": "80", "PATH": ""})
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert any(line.startswith("│ cifar_resnet ") for line in lines)  # whole names, one row per model ...
    assert any("efficientnet_lite0_hymenoptera" in line and "acc=0.9608" in line for line in lines)  # ... and card
    import json

    rows = json.loads(subprocess.run([sys.executable, "-m", "zoo", "list", "cifar*", "--json"], capture_output=True,
                                     text=True, timeout=120, check=True).stdout)
    assert [r["model"] for r in rows] == ["cifar_cnn", "cifar_resnet"]
    assert rows[1]["checkpoints"][0]["metrics"]["test/acc"] > 0.9


def test_config_keeps_the_latest_epoch_for_resuming(cifar_folder, tmp_path):
    """Lightning's save_last only follows improvements; the configs also keep every epoch's state, so a killed run
    resumes from where it stopped, not from its best epoch."""
    import torch

    assert main(["fit", "--config", str(ROOT / "configs" / "cifar_cnn.yaml"), "--data.data_dir", str(cifar_folder),
                 "--data.val_size", "10", "--data.batch_size", "16", "--trainer.max_epochs", "3",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false",
                 "--model.lr", "0.0"]) == 0  # lr 0: val never improves
    (last,) = tmp_path.rglob("last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 2
