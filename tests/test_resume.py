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


def rows(root):
    """metrics.csv of the run under ``root``, each row without its empty cells."""
    import csv

    (metrics,) = root.rglob("metrics.csv")
    with metrics.open() as f:
        return [{k: v for k, v in r.items() if v} for r in csv.DictReader(f)]


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
    assert rows(tmp_path / "b") == rows(tmp_path / "a")  # the same metrics.csv, each step once


class SigtermInValidation(L.Callback):
    """Sends SIGTERM during the first validation batch of epoch ``epoch`` inside fit."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking and trainer.current_epoch == self.epoch and batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_during_validation_loses_no_step(cifar_pickles, tmp_path):
    """Stopped in the middle of the validation that ends epoch 1, the run saves the state of its last step (12);
    resumed, it ends with the uninterrupted run's weights and metrics. Lightning does not repeat the interrupted
    validation on resume, so its row (step 11) is the one thing missing."""
    assert fit(cifar_pickles, tmp_path / "a") == 0
    code = fit(cifar_pickles, tmp_path / "b", "--trainer.callbacks+=test_resume.SigtermInValidation",
               "--trainer.callbacks.epoch=1")
    assert code == 143
    stopped, path = last_state(tmp_path / "b")
    assert stopped["global_step"] == 12
    assert fit(cifar_pickles, tmp_path / "b", "--ckpt_path", str(path)) == 0
    reference, _ = last_state(tmp_path / "a")
    resumed, _ = last_state(tmp_path / "b")
    assert all(torch.equal(reference["state_dict"][k], resumed["state_dict"][k]) for k in reference["state_dict"])

    interrupted = {"step": "11", "epoch": "1"}
    expected = [r for r in rows(tmp_path / "a") if not (r.items() >= interrupted.items() and "val/acc" in r)]
    assert rows(tmp_path / "b") == expected  # train/acc of the epochs too


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


class KillRankAt(L.Callback):
    """SIGKILLs the process of global rank ``rank`` after optimizer step ``step`` (a lost node or an OOM kill)."""

    def __init__(self, step: int, rank: int = 1):
        self.step, self.rank = step, rank

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)


def ddp_fit(data_dir, root, devices: int, *extra, timeout: int = 300):
    """`python -m zoo fit` of the classic CNN on CPU DDP (``devices`` processes), as a user would start it."""
    import subprocess
    import sys
    import time
    from pathlib import Path

    args = [sys.executable, "-m", "zoo", "fit", "--model", "cifar_cnn", "--data", "CIFAR10DataModule",
            "--data.data_dir", str(data_dir), "--data.val_size", "10", "--data.batch_size", "4",
            "--trainer.max_epochs", "2", "--trainer.accelerator", "cpu", "--trainer.devices", str(devices),
            "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false",
            *(["--trainer.strategy", "ddp"] if devices > 1 else []), *extra]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    start = time.monotonic()
    run = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, cwd=root.parent)
    return run, time.monotonic() - start


def test_ddp_job_exits_when_a_rank_is_killed(cifar_pickles, tmp_path):
    """Killing one of two CPU DDP processes ends the job non-zero within a bounded time, not a hang."""
    run, seconds = ddp_fit(cifar_pickles, tmp_path / "run", 2, "--trainer.callbacks+=test_resume.KillRankAt",
                           "--trainer.callbacks.step=3")
    assert run.returncode != 0 and seconds < 180, (run.returncode, seconds, run.stderr[-1500:])


def test_checkpoints_move_between_one_and_two_processes(cifar_pickles, tmp_path):
    """A last.ckpt written by 2 DDP processes resumes in 1, and one written by 1 process resumes in 2."""
    two, _ = ddp_fit(cifar_pickles, tmp_path / "two", 2, "--trainer.max_epochs", "1")
    assert two.returncode == 0, two.stderr[-1500:]
    (path,) = (tmp_path / "two").rglob("last.ckpt")
    one, _ = ddp_fit(cifar_pickles, tmp_path / "two", 1, "--ckpt_path", str(path))
    assert one.returncode == 0, one.stderr[-1500:]
    assert torch.load(path, map_location="cpu", weights_only=True)["epoch"] == 1  # trained on to the end

    single, _ = ddp_fit(cifar_pickles, tmp_path / "one", 1, "--trainer.max_epochs", "1")
    assert single.returncode == 0, single.stderr[-1500:]
    (path,) = (tmp_path / "one").rglob("last.ckpt")
    both, _ = ddp_fit(cifar_pickles, tmp_path / "one", 2, "--ckpt_path", str(path))
    assert both.returncode == 0, both.stderr[-1500:]



def test_two_nodes_on_loopback_train_as_one_job(cifar_pickles, tmp_path):
    """configs/trainer/multinode.yaml: two "nodes" (one process each, NODE_RANK 0 and 1, MASTER_ADDR 127.0.0.1) run
    the same command and train as one 2-process job, as a SLURM/torchrun cluster would start it."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    preset = Path(__file__).resolve().parents[1] / "configs" / "trainer" / "multinode.yaml"
    args = [sys.executable, "-m", "zoo", "fit", "--model", "cifar_cnn", "--data", "CIFAR10DataModule",
            "--data.data_dir", str(cifar_pickles), "--data.val_size", "10", "--data.batch_size", "5",
            "--config", str(preset), "--trainer.accelerator", "cpu", "--trainer.max_epochs", "1",
            "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false"]
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    nodes = [subprocess.Popen(args, env={**env, "NODE_RANK": str(rank)}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path) for rank in (0, 1)]
    errors = [node.communicate(timeout=300)[1] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], errors[0][-1500:] + errors[1][-1500:]
    (last,) = (tmp_path / "run").rglob("last.ckpt")  # written once, by global rank 0
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 5  # 50 images / (2 x 5)
