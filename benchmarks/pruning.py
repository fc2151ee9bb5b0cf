"""Pruning the classic CNN: sparsity vs test accuracy after the same fine-tune, and what it does to speed.

    ZOO_DATA_DIR=../shared/data python benchmarks/pruning.py            # sparsity 0, 50, 70, 90 %; 1 epoch each

From the published ``cifar_cnn_cifar10`` weights, torch's global unstructured L1 pruning (what Lightning's ModelPruning
and configs/callbacks/pruning.yaml apply at epoch ends) removes the target share of all conv and linear weights at
once before training, then one epoch fine-tunes the pruned net (masks kept),
constant LR 0.01; the official test set scores it. Speed: seconds per batch of 256 at inference, dense kernels (the
zeros stay in the tensors). Writes benchmarks/pruning.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from torch.nn.utils import prune

import zoo
from _bench import machine
from zoo.datamodules.cifar import CIFAR10DataModule


def sparsity(model: torch.nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def seconds_per_batch(model: torch.nn.Module, rounds: int = 20) -> float:
    x = torch.randn(256, 3, 32, 32)
    times = []
    with torch.no_grad():
        model(x)
        for _ in range(rounds):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def run(amount: float, epochs: int, root: Path) -> dict:
    L.seed_everything(0)
    model = zoo.get_model("cifar_cnn", init_from="cifar_cnn_cifar10", lr=0.01, schedule="constant")
    model.setup("fit")  # loads the published weights now, so they are pruned before the fine-tune
    model.init_from = None
    layers = [(m, "weight") for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    if amount:  # what ModelPruning("l1_unstructured", use_global_unstructured=True) calls, once, up front
        prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=amount)
    dm = CIFAR10DataModule(val_size=0)
    trainer = L.Trainer(max_epochs=epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=root)
    trainer.fit(model, dm)  # the masks stay applied (forward pre-hooks), so pruned weights stay zero
    if amount:
        for module, name in layers:
            prune.remove(module, name)
    acc = trainer.test(model, dm, verbose=False)[0]["test/acc"]
    model.eval()
    return {"target": amount, "sparsity": sparsity(model), "test_acc": acc, "s_per_batch256": seconds_per_batch(model)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--amounts", type=float, nargs="+", default=[0.0, 0.5, 0.7, 0.9])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("pruning.json"))
    args = parser.parse_args()
    rows = [run(a, args.epochs, Path("runs/pruning")) for a in args.amounts]
    print(f"{machine()}; fine-tune {args.epochs} epoch(s) at lr 0.01 from cifar_cnn_cifar10")
    print(f"{'target':>7}{'sparsity':>10}{'test acc':>10}{'ms / batch 256':>16}{'vs dense':>10}")
    for r in rows:
        print(f"{r['target']:>7.0%}{r['sparsity']:>10.1%}{r['test_acc']:>10.2%}{r['s_per_batch256'] * 1e3:>16.1f}"
              f"{r['s_per_batch256'] / rows[0]['s_per_batch256']:>10.2f}")
    args.out.write_text(json.dumps({"machine": machine(), "epochs": args.epochs, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
