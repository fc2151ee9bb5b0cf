"""Seconds per training epoch of the EfficientNet transfer recipe on hymenoptera, three ways, in one job:
head on precomputed backbone features, head on images through the frozen backbone, and the unfrozen net.

    ZOO_DATA_DIR=../shared/data python benchmarks/efficientnet_epochs.py [--epochs 2]

Each arm runs ``Trainer.fit`` with the config's model and data settings (EfficientNet-Lite0, offline ImageNet
weights); the clock covers training epochs only (not validation). The one-off feature extraction of the first arm
is reported on its own: a run on a fresh feature cache minus the same run on the warm cache.
Writes ``efficientnet_epochs.json`` next to this file.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time

import lightning as L

import zoo  # noqa: E402
from _bench import machine, write_json  # noqa: E402
from zoo.datamodules.image_folder import ImageFolderDataModule  # noqa: E402


class EpochClock(L.Callback):
    def __init__(self):
        self.epochs: list[float] = []
        self.start = 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.epochs.append(time.perf_counter() - self.start)


def run(epochs: int, precompute: bool, unfreeze_at: int | None) -> tuple[list[float], float]:
    """Training-epoch times and the whole ``fit`` wall time."""
    model = zoo.get_model("efficientnet_lite0", num_classes=2, unfreeze_at_epoch=unfreeze_at, tta=0)
    dm = ImageFolderDataModule("hymenoptera_data", precompute=precompute)
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(accelerator="auto", devices=1, max_epochs=epochs, logger=False, enable_progress_bar=False,
                            enable_checkpointing=False, enable_model_summary=False, num_sanity_val_steps=0,
                            callbacks=[clock], default_root_dir=tmp)
        start = time.perf_counter()
        trainer.fit(model, dm)
        total = time.perf_counter() - start
    return clock.epochs, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ZOO_CACHE"] = cache  # a fresh feature cache, so extraction is really measured
        _, cold = run(args.epochs, precompute=True, unfreeze_at=None)
        features, warm = run(args.epochs, precompute=True, unfreeze_at=None)
    extract_s = cold - warm
    frozen, _ = run(args.epochs, precompute=False, unfreeze_at=None)
    unfrozen, _ = run(args.epochs, precompute=False, unfreeze_at=0)
    rows = {"head on precomputed features": features, "head, images through frozen backbone": frozen,
            "whole net unfrozen (BN frozen)": unfrozen}
    result = {"epochs": args.epochs, "feature_extraction_s": extract_s,
              "seconds_per_epoch": {k: statistics.median(v) for k, v in rows.items()},
              "all_epochs_s": rows}
    print(f"\n{machine()}\nEfficientNet-Lite0 on hymenoptera (244 train images), {args.epochs} epochs per arm\n")
    for name, v in rows.items():
        print(f"{name:<40}{statistics.median(v):>10.2f} s/epoch")
    print(f"{'(one-off feature extraction, train+val)':<40}{extract_s:>10.2f} s")
    print(f"\nwrote {write_json(__file__, result)}")


if __name__ == "__main__":
    main()
