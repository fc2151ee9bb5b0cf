"""LightningCLI as the zoo sets it up: any registered LightningModule and any LightningDataModule by short name,
W&B offline by itself when it cannot be reached, the resolved config saved with every run.

Usage (through the ``zoo`` command, see zoo/cli.py):
    zoo fit --config configs/cifar_resnet.yaml
    zoo fit --model CifarCNN --data CIFAR10DataModule --trainer.max_epochs 1
    zoo fit --config configs/vae_mnist.yaml --config configs/logger/wandb.yaml   # W&B; offline without key/network
"""

from __future__ import annotations

import csv
import functools
import os
import re
import sys
from pathlib import Path

import lightning as L
import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

import zoo
from zoo.errors import UserError
import zoo.callbacks  # noqa: F401  (makes the zoo's callbacks resolvable by short name)
import zoo.datamodules  # noqa: F401
from zoo.callbacks.finite_loss import FiniteLoss
from zoo.callbacks.last_checkpoint import AtomicCheckpointIO, LastCheckpoint
from zoo.distributed import GlobalBatchNormSync
from zoo.callbacks.wandb_tools import WandbRun, choose_mode, run_id_from_checkpoint
from zoo.precision import add_precision_option, resolve_auto_precision


def run_name(cfg) -> str:
    """A run's folder name: its first config file's stem (``cifar_cnn`` for configs/cifar_cnn.yaml), else the model's
    class name in lower case."""
    configs = [Path(str(c)) for c in (cfg.get("config") or [])]
    model_configs = [c for c in configs if c.parent.name not in ("trainer", "callbacks", "logger")]
    if model_configs:
        return model_configs[0].stem
    return str(cfg.model.class_path).rsplit(".", 1)[-1].lower() if cfg.get("model") else "run"


def run_folder_of(ckpt: str) -> Path | None:
    """``runs/<name>/version_N`` when ``ckpt`` is ``runs/<name>/version_N/checkpoints/<file>``, else None."""
    folder = Path(ckpt).resolve().parent.parent
    if Path(ckpt).resolve().parent.name == "checkpoints" and folder.name.startswith("version_"):
        return folder if folder.name.split("_", 1)[1].isdigit() else None
    return None


def resumed_step(ckpt: str) -> int:
    """The optimizer step a Lightning checkpoint was saved at; a missing or damaged file is a one-line UserError."""
    if not Path(ckpt).is_file():
        raise UserError(f"--ckpt_path {ckpt}: no such file. A run keeps its state in "
                        "runs/<config>/version_N/checkpoints/last.ckpt.")
    path = Path(ckpt).resolve()
    return _checkpoint_step(str(path), path.stat().st_mtime_ns)


@functools.cache
def _checkpoint_step(ckpt: str, mtime_ns: int) -> int:
    """Read once per file version: `zoo fit` checks the checkpoint before parsing and reads its step after."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, bit-flipped, not a checkpoint, or carrying code (refused unexecuted)
        raise UserError(f"--ckpt_path {ckpt}: not a readable checkpoint ({str(err).splitlines()[0]}); resume from "
                        "an earlier one or start again. It is read with weights_only=True, so no code in it ran.")
    if not isinstance(state, dict) or "state_dict" not in state:
        raise UserError(f"--ckpt_path {ckpt}: not a Lightning checkpoint (no state_dict).")
    return int(state.get("global_step", 0))


class ResumedCSVLogger(CSVLogger):
    """Lightning's CSVLogger continuing a run's metrics.csv: the rows logged before ``resume_step`` stay (Lightning's
    own starts the file afresh in a non-empty folder), so a resumed run's file holds each step once, in order.

    Args:
        resume_step: the step the run resumes from; rows at or after it are logged again and dropped here.
        **kwargs: CSVLogger's (save_dir, name, version, ...).
    """

    def __init__(self, resume_step: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.resume_step = resume_step
        self._earlier: list[dict] | None = None

    @property
    @rank_zero_experiment
    def experiment(self):
        if self._earlier is None:  # first use: read the earlier rows before the writer removes the file
            path = Path(self.log_dir) / "metrics.csv"
            rows = []
            if path.is_file():
                with path.open(newline="") as f:
                    rows = list(csv.DictReader(f))
            self._earlier = [{k: v for k, v in r.items() if v != ""} for r in rows
                             if r.get("step") and int(float(r["step"])) < self.resume_step]
            writer = super().experiment
            writer.metrics[:0] = self._earlier  # written with the first new rows, under one header
            return writer
        return super().experiment


def config_error_line(message: str, prog: str = "zoo fit") -> str:
    """jsonargparse's multi-line report of a bad option or value as one line: the key, the class whose option it is,
    what was wrong, and the command that lists the accepted options, e.g.
    ``data: CIFAR10DataModule has no option 'val_sise'; its options: zoo fit --data.help CIFAR10DataModule``."""
    keys = re.findall(r'Parser key "([^"]+)"', message)
    owner = re.search(r"class_path '(?:[\w.]*\.)?(\w+)'", message)
    key = ".".join(keys) or "config"
    hint = f"{prog} --{key.split('.')[0]}.help {owner.group(1)}" if owner else f"{prog} --help"
    unknown = re.search(r"(?:Option|Key) '([^']+)' is not (?:accepted|expected)", message)
    if owner and owner.group(1) in ("LightningModule", "LightningDataModule"):  # options given, class not chosen
        top = key.split(".")[0]
        names = "NAME (`zoo list`)" if top == "model" else "NAME (a DataModule, e.g. CIFAR10DataModule)"
        return f"{top} options given but no {top} chosen: add --{top} {names} or a --config that has one"
    if unknown and owner:
        return f"{key}: {owner.group(1)} has no option '{unknown.group(1)}'; its options: {hint}"
    group = re.search(r"Group '([^']+)' does not accept option '([^']+)'", message)
    if group:
        return f"{group.group(1)} has no option '{group.group(2)}'; the accepted ones: {hint}"
    if unknown:
        return f"unknown option '{unknown.group(1)}'; the accepted ones: {hint}"
    expected = []
    for kind in re.findall(r"Expected an? (.+?)(?:\. Got value:.*)?$", message, flags=re.MULTILINE):
        literal = re.fullmatch(r"typing\.Literal\[(.*)\]", kind)
        named = re.fullmatch(r"<class '([^']+)'>", kind)
        expected += literal.group(1).split(", ") if literal else [named.group(1)] if named else [kind]
    expected = [e for e in dict.fromkeys(expected) if e != "NoneType"]
    given = re.search(r"(?:Got value|Given value): (.*)", message)
    if expected and given:
        where = f" ({owner.group(1)})" if owner else ""
        wanted = " or ".join(expected) if len(expected) < 3 else "one of " + ", ".join(expected)
        return f"{key}{where}: expected {wanted}, got {given.group(1).strip()!r}; see {hint}"
    first = message.strip().splitlines()[0].rstrip(":")
    return f"{first}; see {hint}"


class ZooArgumentParser(LightningArgumentParser):
    """Reports a bad option or value in one line plus where to look (``ZOO_DEBUG=1``: jsonargparse's full report).
    ``command``: the subcommand being parsed (fit, validate, ...), named in the hint."""

    def __init__(self, *args, command: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.command = command

    def error(self, message: str, ex: Exception | None = None):
        if os.environ.get("ZOO_DEBUG") or not self.exit_on_error:
            return super().error(message, ex)
        prog = f"zoo {self.command}" if self.command else "zoo"
        print(f"zoo: error: {config_error_line(message, prog)} (ZOO_DEBUG=1 shows the full report).", file=sys.stderr)
        sys.exit(2)


class ZooCLI(LightningCLI):
    """LightningCLI in subclass mode: any registered LightningModule and any LightningDataModule by short name."""

    def __init__(self, args=None, **kwargs):
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")
        zoo.register_all()  # every architecture importable by its short class name
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_callback=ZooSaveConfig,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,  # reproducible unless a config or --seed_everything says otherwise
            parser_class=functools.partial(ZooArgumentParser, command=next(
                (a for a in (sys.argv[1:] if args is None else args) if a in self.subcommands()), None)),
            args=args,
            **kwargs,
        )

    def add_arguments_to_parser(self, parser) -> None:
        add_precision_option(parser)  # --precision auto (zoo/precision.py)

    def before_instantiate_classes(self) -> None:
        """Every run gets one folder, ``runs/<config or model>/version_N/`` (``trainer.default_root_dir`` replaces
        ``runs``) holding its config.yaml, metrics.csv, checkpoints/ and images/; never the current folder.
        A W&B logger goes offline by itself when W&B can't be reached and, given ``--ckpt_path``, continues the run
        whose id the checkpoint holds."""
        cfg = self.config[self.subcommand] if self.subcommand else self.config
        resolve_auto_precision(cfg)  # --precision auto: precision, channels_last, compile measured on this CPU
        ckpt = cfg.get("ckpt_path")
        if ckpt and ckpt not in ("last", "best", "hpc"):
            step = resumed_step(ckpt)  # also checks that the file is there and readable
        cfg.trainer.default_root_dir = cfg.trainer.default_root_dir or "runs"
        if cfg.trainer.logger in (None, True):  # Lightning's default: TensorBoard if installed, else CSV in cwd
            folder = run_folder_of(ckpt) if self.subcommand == "fit" and ckpt else None
            if folder is not None:  # resuming: the same folder, logger version and metrics.csv
                cfg.trainer.logger = Namespace(class_path="zoo.lightning_cli.ResumedCSVLogger", init_args=Namespace(
                    save_dir=str(folder.parent.parent), name=folder.parent.name,
                    version=int(folder.name.split("_", 1)[1]), resume_step=step))
            else:
                cfg.trainer.logger = Namespace(class_path="lightning.pytorch.loggers.CSVLogger", init_args=Namespace(
                    save_dir=cfg.trainer.default_root_dir, name=run_name(cfg)))
        loggers = cfg.trainer.logger
        loggers = loggers if isinstance(loggers, list) else [loggers]
        for logger in (lg for lg in loggers if hasattr(lg, "init_args")):
            args = logger.init_args
            wandb = logger.class_path.endswith("WandbLogger")
            if args.get("save_dir") == ".":
                # W&B's checkpoints go to <save_dir>/<project>/<run id>: "./zoo/..." would land in the package
                args.save_dir = cfg.trainer.default_root_dir
            if not wandb:
                continue
            if rank_zero_only.rank == 0 and not args.get("offline") and args.get("mode") is None:
                choose_mode()
            ckpt = cfg.get("ckpt_path")
            if ckpt and Path(ckpt).is_file() and not (args.get("id") or args.get("version")):
                args.id = run_id_from_checkpoint(ckpt)
                args.resume = "allow"

    def instantiate_trainer(self, **kwargs):
        """Every fit keeps ``last.ckpt`` and stops on a non-finite loss (``LastCheckpoint``, ``FiniteLoss``); with a
        W&B logger, also :class:`WandbRun` (run id in checkpoints, model artifact) and a learning-rate monitor;
        each unless the config already has one."""
        cfg = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer_cfg = cfg.get("trainer") or {}
        loggers = trainer_cfg.get("logger")
        loggers = loggers if isinstance(loggers, list) else [loggers]
        cbs = trainer_cfg.get("callbacks") or []
        cbs = list(cbs if isinstance(cbs, list) else [cbs])
        wanted = [LastCheckpoint, FiniteLoss] if self.subcommand in ("fit", None) else []
        if any(isinstance(lg, WandbLogger) for lg in loggers):
            wanted += [WandbRun, LearningRateMonitor]
        for cls in wanted:
            if not any(isinstance(cb, cls) for cb in cbs):
                cbs.append(cls())
        plugins = trainer_cfg.get("plugins") or [AtomicCheckpointIO()]  # every checkpoint written atomically
        plugins = list(plugins if isinstance(plugins, list) else [plugins])
        if trainer_cfg.get("sync_batchnorm") and (trainer_cfg.get("accelerator") == "cpu" or not torch.cuda.is_available()):
            kwargs["sync_batchnorm"] = False  # torch's SyncBatchNorm runs on CUDA only; the zoo's on any device
            plugins.append(GlobalBatchNormSync())
        kwargs.setdefault("plugins", plugins)
        return super().instantiate_trainer(callbacks=cbs, **kwargs)


class ZooSaveConfig(SaveConfigCallback):
    """Saves config.yaml in the log dir and, for a W&B logger, also in the run's own folder (next to
    ``checkpoints/``, where ``zoo export`` looks) and as the run's W&B config (the full resolved CLI config)."""

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for logger in trainer.loggers:
            if not isinstance(logger, WandbLogger):
                continue
            run = logger.experiment
            folder = Path(logger.save_dir or ".") / str(logger.name) / str(run.id)
            folder.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, folder / self.config_filename, skip_none=False, overwrite=True)
            resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False, format="yaml"))
            run.config.update(resolved, allow_val_change=True)
