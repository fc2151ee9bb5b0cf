"""The ``zoo`` command: LightningCLI (fit/validate/test/predict) plus ``zoo list``, ``zoo export``, ``zoo evaluate``.

Usage:
    zoo fit --config configs/cifar_resnet.yaml
    zoo fit --model CifarCNN --data CIFAR10DataModule --trainer.max_epochs 1
    zoo list
"""

from __future__ import annotations

import sys

import lightning as L
import torch
from lightning.pytorch.cli import LightningCLI

import callbacks  # noqa: F401  (makes the zoo's callbacks resolvable by short name)
import datamodules  # noqa: F401
import zoo

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


class ZooCLI(LightningCLI):
    """LightningCLI in subclass mode: any registered LightningModule and any LightningDataModule by short name."""

    def __init__(self, args=None, **kwargs):
        if torch.cuda.is_available():
            torch.set_float32_matmul_precision("high")
        super().__init__(
            L.LightningModule,
            L.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            args=args,
            **kwargs,
        )


def cmd_list(argv: list[str]) -> int:
    """``zoo list [PATTERN]``: a table of registered models (and their published checkpoints)."""
    from rich.console import Console
    from rich.table import Table

    from zoo.hub import published

    pattern = argv[0] if argv else "*"
    table = Table(title="zoo models")
    for col in ("name", "class", "description", "pretrained", "metric"):
        table.add_column(col)
    cards = published()
    for name in zoo.list_models(pattern):
        entry = zoo.model_entry(name)
        mine = [c for c in cards.values() if c["model"] == name]
        pre = ", ".join(c["name"] for c in mine) or "-"
        metric = ", ".join(f"{k}={v:.4g}" for c in mine for k, v in c["metrics"].items()) or "-"
        table.add_row(name, entry.cls.__name__, entry.description, pre, metric)
    Console().print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "list":
        return cmd_list(argv[1:])
    if argv and argv[0] in ("export", "evaluate"):
        from zoo import hub

        return hub.main(argv)
    ZooCLI(args=argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
