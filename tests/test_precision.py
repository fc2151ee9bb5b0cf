"""Every model family fits in mixed precision through its own config and the CLI: bf16 on the CPU (CI), and fp16 and
bf16 on a CUDA GPU (skipped without one; run ``pytest tests/test_precision.py`` on a machine that has one)."""

from pathlib import Path

import pytest
import torch
from conftest import image_root  # noqa: F401 (fixture)
from conftest import make_raw
from conftest import TINY, csv_file, text_file  # noqa: F401 (fixtures)
from conftest import ab_data  # noqa: F401 (fixture)

from zoo.lightning_cli import ZooCLI

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PRECISIONS = [pytest.param(("cpu", "bf16-mixed"), id="cpu-bf16"),
              pytest.param(("gpu", "16-mixed"), id="gpu-fp16", marks=NO_GPU),
              pytest.param(("gpu", "bf16-mixed"), id="gpu-bf16", marks=NO_GPU)]


def fit(tmp_path, config: str, precision: tuple[str, str], *extra: str) -> None:
    """Two training steps and one validation batch; every logged metric must be finite."""
    accelerator, precision = precision
    cli = ZooCLI(args=["--config", str(CONFIGS / f"{config}.yaml"), "--trainer.accelerator", accelerator,
                       "--trainer.precision", precision, "--trainer.devices", "1", "--trainer.fast_dev_run", "2",
                       "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
                       *extra], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.model.device.type == ("cuda" if accelerator == "gpu" else "cpu")
    metrics = cli.trainer.callback_metrics
    assert metrics, "nothing was logged"
    bad = {k: float(v) for k, v in metrics.items() if not torch.isfinite(v).all()}
    assert not bad, f"non-finite metrics under {precision} with {extra}: {bad}"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("config", ["cifar_cnn", "cifar_resnet"])
def test_cifar_classifiers(config, precision, cifar_folder, tmp_path):
    fit(tmp_path, config, precision, "--data.data_dir", str(cifar_folder),
        "--data.val_size", "10", "--data.batch_size", "16")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("config,data", [("vae_mnist", "MNIST"), ("dcgan_fashion_mnist", "FashionMNIST")])
def test_generative_models(config, data, precision, tmp_path):
    make_raw(tmp_path / "data", data, gz=False, n_train=24, n_test=8)
    fit(tmp_path, config, precision, "--data.data_dir", str(tmp_path / "data"),
        "--data.val_size", "8", "--data.batch_size", "8")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_pix2pix(precision, ab_data, tmp_path):  # noqa: F811
    fit(tmp_path, "pix2pix_people_cpu", precision, "--data.data_dir", str(ab_data),
        "--data.folder", "pairs", "--data.load_size", "40", "--data.crop_size", "32", "--model.image_size", "32",
        "--model.gen_width", "4", "--model.disc_width", "4")


@pytest.mark.parametrize("cell", ["lstm", "gru"])  # oneDNN has no bf16 LSTM/GRU on CPUs without bf16: fp32 there
@pytest.mark.parametrize("precision", PRECISIONS)
def test_char_lstm(precision, cell, text_file, tmp_path):  # noqa: F811
    fit(tmp_path, "lstm_tinyshakespeare_cpu", precision, "--data.init_args.path", str(text_file),
        "--data.init_args.batch_size", "2", "--data.init_args.seq_len", "32", "--model.init_args.cell", cell,
        *[f"--model.init_args.{k}={v}" for k, v in TINY.items()])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_forecaster(precision, csv_file, tmp_path):  # noqa: F811
    fit(tmp_path, "lstm_airline", precision, "--data.init_args.path", str(csv_file), "--model.init_args.cell", "gru")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_efficientnet_frozen_then_unfrozen(precision, image_root, tmp_path):  # noqa: F811
    """Epoch 0 on cached backbone features, epoch 1 on images through the whole net."""
    fit(tmp_path, "efficientnet_hymenoptera", precision, "--trainer.fast_dev_run", "false",
        "--trainer.max_epochs", "2", "--model.init_args.pretrained", "false", "--model.init_args.image_size", "32",
        "--model.init_args.unfreeze_at_epoch", "1", "--data.init_args.folder", "tiny", "--data.init_args.data_dir",
        str(image_root), "--data.init_args.batch_size", "4")
