"""DDP on CPU is the same training as one process: 2 processes at a batch of B/2 end with the weights of 1 process at
B (to float tolerance), for a classifier and for the DCGAN, whose batch norm is synchronised over the global batch by
zoo.distributed.GlobalBatchNormSync (torch's SyncBatchNorm runs on CUDA only)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import make_raw
from torch import nn

from zoo.distributed import GlobalBatchNorm2d, GlobalBatchNormSync


def test_global_batch_norm_is_batch_norm_in_one_process():
    torch.manual_seed(0)
    plain = nn.BatchNorm2d(3)
    synced = GlobalBatchNormSync().apply(nn.Sequential(nn.BatchNorm2d(3)))[0]
    assert isinstance(synced, GlobalBatchNorm2d)
    x = torch.randn(4, 3, 5, 5) * 3 + 1
    assert torch.allclose(synced(x), plain(x), atol=1e-6)
    assert torch.allclose(synced.running_var, plain.running_var) and synced.num_batches_tracked == 1
    plain.eval(), synced.eval()
    assert torch.allclose(synced(x), plain(x), atol=1e-6)
    reverted = GlobalBatchNormSync().revert(nn.Sequential(synced))[0]
    assert type(reverted) is nn.BatchNorm2d and reverted.state_dict().keys() == plain.state_dict().keys()


def fit(root: Path, devices: int, batch_size: int, *args: str) -> dict:
    """`python -m zoo fit` on CPU with ``devices`` DDP processes; the final weights."""
    cmd = [sys.executable, "-m", "zoo", "fit", *args, "--data.batch_size", str(batch_size),
           "--trainer.accelerator", "cpu", "--trainer.devices", str(devices), "--trainer.max_epochs", "1",
           "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
           *(["--trainer.strategy", "ddp"] if devices > 1 else [])]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=root.parent)
    assert run.returncode == 0, run.stderr[-2000:]
    (path,) = root.rglob("last.ckpt")
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


@pytest.mark.parametrize("family", ["classifier", "dcgan"])
def test_two_processes_at_half_the_batch_train_as_one(family, cifar_pickles, tmp_path):
    if family == "classifier":  # dropout and augmentation draw per process: off here
        args = ["--model", "cifar_cnn", "--model.dropout", "0", "--data", "CIFAR10DataModule", "--data.data_dir",
                str(cifar_pickles), "--data.val_size", "0", "--data.crop_padding", "0", "--data.flip", "false"]
    else:
        make_raw(tmp_path / "data", "FashionMNIST", gz=False, n_train=32)
        data = tmp_path / "data"
        args = ["--model", "DCGAN", "--model.gen_width", "8", "--model.disc_width", "8", "--model.fd_features",
                "null", "--data", "FashionMNISTDataModule", "--data.data_dir", str(data), "--data.image_size", "32",
                "--data.value_range=-1,1", "--data.val_size", "0", "--trainer.sync_batchnorm", "true"]
    one = fit(tmp_path / "one", 1, 8, *args)
    two = fit(tmp_path / "two", 2, 4, *args)
    assert one.keys() == two.keys()
    print(f"{family}: 2 processes at 4 vs 1 at 8, max |dw| = {max_diff(one, two):.1e}")  # shown with -s
    assert max_diff(one, two) < 1e-5
