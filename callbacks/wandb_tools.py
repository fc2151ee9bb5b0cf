"""W&B glue: offline unless W&B is reachable, the run id kept in checkpoints, the final model logged as an artifact.

Usage:
    zoo fit --config configs/cifar_cnn.yaml --config configs/logger/wandb.yaml   # the CLI adds WandbRun itself
    zoo fit --config configs/cifar_cnn.yaml --config configs/logger/wandb.yaml --ckpt_path .../last.ckpt  # same run
    trainer = L.Trainer(logger=WandbLogger(project="zoo"), callbacks=[WandbRun()])          # without the CLI

Offline runs land in ``<save_dir>/wandb/offline-run-*``; upload them later with ``wandb sync <that folder>``.
"""

from __future__ import annotations

import netrc
import os
import socket
import threading
import urllib.parse
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

DEFAULT_BASE_URL = "https://api.wandb.ai"


# ------------------------------------------------------------------------------------------------- offline first
def has_api_key(base_url: str) -> bool:
    """True if wandb would find credentials: ``WANDB_API_KEY``, an identity token file, or a netrc entry."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:  # the netrc file wandb login writes (stdlib parser: wandb's own reader is private API)
        path = os.environ.get("NETRC") or None
        host = urllib.parse.urlsplit(base_url).hostname
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):  # no netrc, or a malformed one: no usable key
        return False


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Can a TCP connection to ``url``'s host be opened within ``timeout`` s? DNS runs in a thread, so it can't hang."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    ok = threading.Event()

    def connect() -> None:
        try:
            socket.create_connection((parts.hostname, port), timeout=timeout).close()
            ok.set()
        except OSError:
            pass

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout)
    return ok.is_set()


def choose_mode(timeout: float = 3.0) -> str:
    """``WANDB_MODE`` as the user set it; else ``offline`` (and set so) when there is no key or no route to W&B.

    Called before the W&B logger starts, so wandb never prompts for a key or waits on a network that isn't there.
    """
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    base = os.environ.get("WANDB_BASE_URL", DEFAULT_BASE_URL)
    reason = None
    if not has_api_key(base):
        reason = "no W&B API key (set WANDB_API_KEY or run `wandb login`)"
    elif not reachable(base, timeout):
        reason = f"{urllib.parse.urlsplit(base).hostname} is not reachable"
    if reason is None:
        return "online"
    os.environ["WANDB_MODE"] = "offline"
    rank_zero_info(f"W&B: {reason}, so this run is logged offline; upload it later with `wandb sync <run dir>`.")
    return "offline"


def run_id_from_checkpoint(path: str | os.PathLike) -> str | None:
    """The W&B run id that a :class:`WandbRun` callback stored in a Lightning checkpoint, if any."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    for key, state in (ckpt.get("callbacks") or {}).items():
        if str(key).startswith(WandbRun.__qualname__) and isinstance(state, dict) and state.get("run_id"):
            return state["run_id"]
    return None


def finish(exit_code: int = 0) -> None:
    """Close the active W&B run, if this process started one (so a later fit in the process starts its own)."""
    import sys

    wandb = sys.modules.get("wandb")  # never import wandb just to find that nothing ran
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=exit_code)


def wandb_logger(trainer: L.Trainer) -> WandbLogger | None:
    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


# --------------------------------------------------------------------------------------------------- callback
class WandbRun(L.Callback):
    """Keeps the W&B run id in every checkpoint and logs the final checkpoint with its model card as an artifact.

    The id lets ``zoo fit --ckpt_path ...`` continue the same run (the CLI reads it with
    :func:`run_id_from_checkpoint` before the logger starts). At the end of ``fit`` (rank 0), the last checkpoint
    (else the best) is exported with ``zoo.hub.export`` (``model-<run id>.safetensors`` + ``.json`` card, no test
    run) and logged as the ``model`` artifact ``model-<run id>``, with the Lightning ``.ckpt`` if ``include_ckpt``.
    Offline, the artifact waits in the run folder for ``wandb sync``. Inert without a :class:`WandbLogger`.

    Args:
        log_model: log the artifact at the end of fit.
        include_ckpt: also put the Lightning ``.ckpt`` (weights + optimizer state) in the artifact.
    """

    def __init__(self, log_model: bool = True, include_ckpt: bool = True):
        self.log_model, self.include_ckpt = log_model, include_ckpt
        self.run_id: str | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        logger = wandb_logger(trainer)
        if logger is not None and trainer.is_global_zero:
            self.run_id = logger.experiment.id  # starts the run (rank 0 only; other ranks hold a dummy)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = wandb_logger(trainer)
        if not (self.log_model and logger is not None and trainer.is_global_zero and trainer.checkpoint_callback):
            return
        # The newest file any checkpoint callback wrote: the end of training, whichever callback saved it.
        paths = [Path(p) for cb in trainer.checkpoint_callbacks for p in (cb.last_model_path, cb.best_model_path) if p]
        paths = [p for p in paths if p.is_file()]
        if paths:
            self.log_artifact(trainer, logger, max(paths, key=lambda p: p.stat().st_mtime_ns))

    @rank_zero_only
    def log_artifact(self, trainer: L.Trainer, logger: WandbLogger, ckpt: Path) -> None:
        import wandb

        run = logger.experiment
        name = f"model-{run.id}"
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
        artifact = wandb.Artifact(name, type="model", metadata={
            "checkpoint": ckpt.name, "global_step": trainer.global_step, "epoch": trainer.current_epoch,
            "metrics": metrics,
        })
        if self.include_ckpt:
            artifact.add_file(str(ckpt), name=ckpt.name)
        try:
            from zoo import hub

            config = next((c for c in (ckpt.parent.parent / "config.yaml", Path(trainer.log_dir or "") / "config.yaml")
                           if c.is_file()), None)
            card = hub.export(ckpt, name, ckpt.parent.parent / "model", config=config, test=False, force=True)
            artifact.add_file(str(card), name=card.name)
            artifact.add_file(str(card.with_suffix(".safetensors")), name=f"{name}.safetensors")
        except Exception as err:  # e.g. no training config (plain Trainer) or an unregistered model: ckpt only
            warnings.warn(f"WandbRun: no model card for {ckpt} ({err}); the artifact holds the checkpoint only.")
            if not self.include_ckpt:
                return
        run.log_artifact(artifact, aliases=["latest"])

    def state_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.run_id = self.run_id or state_dict.get("run_id")
