"""``last.ckpt``: the whole state of a run (weights, optimizer, schedulers, loop position, callbacks), kept fresh.

Usage: in every config of configs/ (and added by ``zoo fit`` when a config has none); or
    trainer = L.Trainer(callbacks=[LastCheckpoint(every_n_train_steps=200)])
    zoo fit --config configs/cifar_cnn.yaml --ckpt_path runs/cifar_cnn/version_0/checkpoints/last.ckpt   # resume

Written every ``every_n_train_steps`` optimizer steps, at the end of every training epoch, when fit ends (however
short the run) and when the run is stopped by SIGTERM or Ctrl-C after its current step, so a resume loses nothing
after a signal and at most ``every_n_train_steps`` steps after a SIGKILL. Lightning writes the file atomically (a
temporary file renamed over the old one). A state with a non-finite weight is never written: the last good
checkpoint stays.
"""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zoo.callbacks.finite_loss import NonFiniteLossError


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic: each checkpoint is written to a temporary file beside its target
    and renamed over it, so a full disk or a kill mid-write leaves the previous file, never half of a new one.
    ``zoo fit`` uses it for every checkpoint (LastCheckpoint's and ModelCheckpoint's); elsewhere pass
    ``L.Trainer(plugins=[AtomicCheckpointIO()])``."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        from zoo.hub import write_atomic

        write_atomic(Path(path), lambda tmp: super(AtomicCheckpointIO, self).save_checkpoint(checkpoint, tmp,
                                                                                             storage_options))


class LastCheckpoint(ModelCheckpoint):
    """Keeps ``<run>/checkpoints/last.ckpt`` (the folder ModelCheckpoint resolves for the run's logger).

    Args:
        every_n_train_steps: optimizer steps between periodic saves; 0 saves only at epoch ends, fit's end and
            on a signal.
    """

    def __init__(self, every_n_train_steps: int = 200):
        super().__init__(filename="last", save_top_k=0, save_last=False, every_n_epochs=0)
        self.every_n_steps = every_n_train_steps
        self._saved_step = -1

    @property
    def path(self) -> Path:
        return Path(self.dirpath) / f"last{self.FILE_EXTENSION}"

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath:  # a write killed midway left its temporary file: not a checkpoint
            for partial in Path(self.dirpath).glob(".*.partial*"):
                partial.unlink(missing_ok=True)

    def save(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Write ``last.ckpt`` now, unless this step is saved already or a weight is not finite."""
        if trainer.sanity_checking or trainer.fast_dev_run or trainer.global_step == self._saved_step:
            return
        bad = [name for name, p in pl_module.state_dict().items() if p.is_floating_point() and not p.isfinite().all()]
        if bad:
            raise NonFiniteLossError(
                f"Step {trainer.global_step}: non-finite values in {bad[:3]}; kept the last good checkpoint "
                f"{self.path} (step {self._saved_step}) instead of overwriting it.")
        trainer.save_checkpoint(self.path, weights_only=False)  # the whole state, not only the weights
        self._saved_step = trainer.global_step
        self.last_model_path = str(self.path)  # where ModelCheckpoint users (e.g. WandbRun) look for it

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Not after an epoch's last batch: the epoch-end save follows (after validation), and Lightning 2.6 resumed
        # from a checkpoint taken at that point skips the next epoch (tests/test_resume.py).
        last_of_epoch = batch_idx + 1 >= trainer.num_training_batches
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0 and not last_of_epoch:
            self.save(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.save(trainer, pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        pass  # ModelCheckpoint would save here; this callback saves on its own schedule

    def on_train_end(self, trainer, pl_module) -> None:
        self.save(trainer, pl_module)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # A signal stops the run between two steps or two validation batches (Lightning raises after finishing the
        # current one): save it. Resumed, Lightning runs that validation again from its start, then trains on.
        if isinstance(exception, (SIGTERMException, KeyboardInterrupt)) and trainer.state.fn == "fit" and not (
                trainer.sanity_checking):
            self.save(trainer, pl_module)

    def state_dict(self) -> dict:
        # The random state the next steps start from (augmentation, dropout, noise): a resumed run draws the same.
        return {"saved_step": self._saved_step, "rng": rng_state()}

    def load_state_dict(self, state_dict: dict) -> None:
        self._saved_step = state_dict.get("saved_step", -1)
        if "rng" in state_dict:
            set_rng_state(state_dict["rng"])


def rng_state() -> dict:
    """torch's CPU (and CUDA) generators, numpy's and Python's, as tensors and plain values (weights_only-safe)."""
    state = {"torch": torch.get_rng_state(), "python": _python_state(), "numpy": _numpy_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _numpy_state() -> list:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]

