"""Time to accuracy (slow, not part of CI): wall time of the flagship's training until its test accuracy first
reaches 90 %, 93 % and 94 %, on real CIFAR-10, with the flagship's own config.

    ZOO_DATA_DIR=../shared/data python benchmarks/time_to_accuracy.py [extra zoo fit arguments]

After every epoch the clock stops, the official test set is scored without test-time augmentation (and with the
config's TTA after the last epoch), and the clock restarts: the times are training time only. Prints a table and
writes ``time_to_accuracy.json`` next to this file. Takes as long as a full training run (about 85 min on 2 CPU cores).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import lightning as L

from _bench import machine, test_accuracy, write_json  # noqa: E402
from zoo.lightning_cli import ZooCLI  # noqa: E402

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "cifar_resnet.yaml"
THRESHOLDS = (0.90, 0.93, 0.94)


class TestClock(L.Callback):
    """Training wall time and test accuracy at the end of every epoch."""

    def __init__(self):
        self.rows: list[dict] = []
        self.train_s, self.start = 0.0, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.train_s += time.perf_counter() - self.start
        last = trainer.current_epoch + 1 == trainer.max_epochs
        levels = (0, pl_module.hparams.tta) if last else (0,)
        row = {"epoch": trainer.current_epoch + 1, "train_s": self.train_s}
        row.update({f"test_acc_tta{lv}": self.test_accuracy(trainer, pl_module, lv) for lv in levels})
        self.rows.append(row)
        accuracies = ", ".join(f"TTA {lv}: {row[f'test_acc_tta{lv}']:.4f}" for lv in levels)
        print(f"epoch {row['epoch']}: {self.train_s:.0f} s, test accuracy ({accuracies})", flush=True)

    def test_accuracy(self, trainer, pl_module, level: int) -> float:
        was_training = pl_module.training
        pl_module.eval()
        accuracy = test_accuracy(pl_module, trainer.datamodule, level)
        pl_module.train(was_training)
        return accuracy


def main() -> None:
    cli = ZooCLI(args=["--config", str(CONFIG), "--trainer.enable_progress_bar", "false",
                       "--trainer.default_root_dir", "runs/time_to_accuracy", *sys.argv[1:]], run=False)
    clock = TestClock()
    cli.trainer.callbacks.append(clock)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    reached = {}
    for t in THRESHOLDS:
        hit = next((r for r in clock.rows if max(v for k, v in r.items() if k.startswith("test_acc")) >= t), None)
        reached[f"{t:.2f}"] = None if hit is None else {"epoch": hit["epoch"], "train_s": hit["train_s"]}
    print(f"\n{machine()}\n")
    for t, hit in reached.items():
        print(f"test accuracy >= {t}: " + ("not reached" if hit is None else
                                             f"{hit['train_s'] / 60:.1f} min (epoch {hit['epoch']})"))
    print(f"\nwrote {write_json(__file__, {'epochs': clock.rows, 'reached': reached})}")


if __name__ == "__main__":
    main()
