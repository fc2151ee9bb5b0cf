"""Stop, crash, resume: a run stopped by SIGTERM mid-epoch exits 143 with its state saved after the current step, and
resuming from that last.ckpt ends with exactly the weights of the uninterrupted run (same data order, augmentation,
dropout, optimizer and schedule), in the same run folder; a non-finite loss stops the run and keeps the last good
checkpoint."""

import os
import signal

import lightning as L
import pytest
import torch

from zoo.cli import main


class SigtermAt(L.Callback):
    """Sends this process SIGTERM after optimizer step ``step`` (as a cluster's preemption would)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


class NanAt(L.Callback):
    """Poisons a weight after optimizer step ``step``, so the next loss is NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def fit(data_dir, root, *extra):
    return main(["fit", "--model", "cifar_cnn", "--data", "CIFAR10DataModule", "--data.data_dir", str(data_dir),
                 "--data.val_size", "10", "--data.batch_size", "8", "--trainer.max_epochs", "3",
                 "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
                 "--trainer.callbacks+=LastCheckpoint", "--trainer.callbacks.every_n_train_steps=4", *extra])


def last_state(root):
    (path,) = root.rglob("last.ckpt")
    return torch.load(path, map_location="cpu", weights_only=True), path


def test_sigterm_mid_epoch_then_resume_matches_the_uninterrupted_run(cifar_pickles, tmp_path):
    assert fit(cifar_pickles, tmp_path / "a") == 0
    reference, _ = last_state(tmp_path / "a")
    assert reference["global_step"] == 18  # 3 epochs of 6 batches

    code = fit(cifar_pickles, tmp_path / "b", "--trainer.callbacks+=test_resume.SigtermAt",
               "--trainer.callbacks.step=8")
    assert code == 143
    stopped, path = last_state(tmp_path / "b")
    assert stopped["global_step"] == 8  # saved after the step that got the signal: no step lost

    assert fit(cifar_pickles, tmp_path / "b", "--ckpt_path", str(path)) == 0
    resumed, resumed_path = last_state(tmp_path / "b")  # same folder, same version: one last.ckpt
    assert resumed_path == path and resumed["global_step"] == 18
    for key, value in reference["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(cifar_pickles, tmp_path, capsys):
    code = fit(cifar_pickles, tmp_path, "--trainer.callbacks+=test_resume.NanAt", "--trainer.callbacks.step=5")
    assert code == 2
    assert "Training loss is nan at step 6" in capsys.readouterr().err
    state, _ = last_state(tmp_path)
    assert state["global_step"] == 4 and all(v.isfinite().all() for v in state["state_dict"].values())


@pytest.mark.parametrize("damage", ["zeros", "bitflip"])
def test_weights_beside_their_card_are_verified(tmp_path, damage):
    """zoo.load of a .safetensors next to its card checks the card's sha256, whatever the file holds."""
    import shutil

    from safetensors.torch import load_file, save_file

    import zoo
    from zoo.hub import PUBLISHED_DIR, CheckpointError

    for suffix in (".json", ".safetensors"):
        shutil.copy(PUBLISHED_DIR / f"cifar_cnn_cifar10{suffix}", tmp_path)
    weights = tmp_path / "cifar_cnn_cifar10.safetensors"
    if damage == "zeros":
        save_file({k: torch.zeros_like(v) for k, v in load_file(weights).items()}, weights)
    else:
        data = bytearray(weights.read_bytes())
        data[-100] ^= 0x01
        weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"cifar_cnn_cifar10.safetensors: sha256 [0-9a-f]{64} does not match"):
        zoo.load(str(weights))


@pytest.mark.slow
def test_fault_harness_on_a_small_budget(tmp_path):
    """benchmarks/faults.py, classifier family, one trial of each fault: every fault survived."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the real data in {SHARED_DATA}")
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"
    run = subprocess.run([sys.executable, str(script), "--families", "classifier", "--trials", "1", "--out",
                          str(tmp_path / "faults.json")], capture_output=True, text=True, timeout=1800,
                         env={**__import__("os").environ, "ZOO_DATA_DIR": str(SHARED_DATA)})
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
