"""Ablation of the training callbacks: the same student, the same budget, several seeds.

Prints a Markdown table of test accuracy (mean ± std over seeds, difference to the baseline, a verdict) and writes
every run to ``benchmarks/callbacks_ablation.json`` (next to this script). The README's table comes from here.

Usage:
    python benchmarks/callbacks_ablation.py --epochs 4 --seeds 0 1                 # the short-budget table
    # the converged table, in two halves side by side (one thread each), then merged:
    python benchmarks/callbacks_ablation.py --epochs 30 --seeds 0 --precision bf16-mixed --channels-last --out A.json
    python benchmarks/callbacks_ablation.py --epochs 30 --seeds 1 --precision bf16-mixed --channels-last --out B.json
    python benchmarks/callbacks_ablation.py --merge A.json B.json --out benchmarks/callbacks_ablation_30ep.json
    # the data-limited tables: 5,000 training images, 100 epochs, with the cosine schedule and with a constant LR
    python benchmarks/callbacks_ablation.py --train-size 5000 --epochs 100 --seeds 0 1 2 --precision bf16-mixed \
        --channels-last --kd-temperature 1 --kd-alpha 0.5 --out benchmarks/callbacks_ablation_5k.json
    python benchmarks/callbacks_ablation.py --train-size 5000 --epochs 100 --seeds 0 1 2 --precision bf16-mixed \
        --channels-last --schedule constant --variants baseline swa ema --out benchmarks/callbacks_ablation_5k_constant.json
    python benchmarks/callbacks_ablation.py --epochs 1 --seeds 0 1 --limit 2 --teacher PATH    # a smoke run

Variants: baseline, mixup (MixUp alpha 0.2), cutmix (CutMix alpha 1.0), swa (Lightning's SWA from 75% of the epochs),
ema (Lightning's EMAWeightAveraging), distillation (from ``--teacher``, by default the published flagship). Every
variant trains ``--student`` with its default recipe for ``--epochs`` epochs; the test set is the official one
(evaluated without test-time augmentation, so only the callback differs). A variant whose effect is within the
seeds' spread is reported as "no measurable effect".
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging

sys.path.insert(0, str(Path(__file__).parent))
from _bench import machine  # noqa: E402


import zoo  # noqa: E402
from zoo.callbacks import Distillation, MixUpCutMix  # noqa: E402
from zoo.datamodules.cifar import CIFAR10DataModule  # noqa: E402
from zoo.optim import SCHEDULES  # noqa: E402

VARIANTS = ("baseline", "mixup", "cutmix", "swa", "ema", "distillation")


def make_callbacks(variant: str, args: argparse.Namespace, seed: int) -> list[L.Callback]:
    if variant == "baseline":
        return []
    if variant == "mixup":
        return [MixUpCutMix(mixup_alpha=0.2, cutmix_alpha=0.0, seed=seed)]
    if variant == "cutmix":
        return [MixUpCutMix(mixup_alpha=0.0, cutmix_alpha=1.0, seed=seed)]
    if variant == "swa":
        return [StochasticWeightAveraging(swa_lrs=args.swa_lr, swa_epoch_start=0.75,
                                          annealing_epochs=max(1, args.epochs // 10), device=None)]
    if variant == "ema":
        return [EMAWeightAveraging(decay=args.ema_decay)]
    if variant == "distillation":
        return [Distillation(args.teacher, temperature=args.kd_temperature, alpha=args.kd_alpha)]
    raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")


def limit(value: str | None) -> int | float | None:
    if value is None:
        return None
    return float(value) if "." in value else int(value)


def run_one(variant: str, seed: int, args: argparse.Namespace) -> dict:
    L.seed_everything(seed, workers=True, verbose=False)
    recipe = {"schedule": args.schedule} if args.schedule else {}
    model = zoo.get_model(args.student, tta=0, channels_last=args.channels_last, **recipe)
    data = CIFAR10DataModule(data_dir=args.data_dir, batch_size=args.batch_size, val_size=args.val_size, seed=0,
                             labelled=args.train_size)
    lim = limit(args.limit)
    trainer = L.Trainer(
        accelerator=args.accelerator, devices=1, precision=args.precision, max_epochs=args.epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, limit_val_batches=0,
        limit_train_batches=lim, limit_test_batches=lim, callbacks=make_callbacks(variant, args, seed),
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    # The model now holds the averaged weights for swa/ema (copied in at the end of training).
    acc = float(trainer.test(model, datamodule=data, verbose=False)[0]["test/acc"])
    return {"variant": variant, "seed": seed, "test_acc": acc, "seconds": round(time.perf_counter() - start, 1)}


@torch.no_grad()
def teacher_softness(args: argparse.Namespace, n: int = 500) -> None:
    """Print how soft the teacher's targets are at T 1, 2, 4 on the first ``n`` training images (seeded order)."""
    data = CIFAR10DataModule(data_dir=args.data_dir, batch_size=n, val_size=args.val_size, seed=0)
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    logits = zoo.load(args.teacher)(data.normalize(x)).float()
    for t in (1, 2, 4):
        p = (logits / t).softmax(-1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
        print(f"T {t}: entropy {entropy:.2f} nats (uniform {math.log(p.shape[1]):.2f}), "
              f"mean probability of the true class {p[torch.arange(len(y)), y].mean():.2f}")


def summarise(runs: list[dict]) -> list[dict]:
    by_variant: dict[str, list[float]] = {}
    for r in runs:
        by_variant.setdefault(r["variant"], []).append(r["test_acc"])
    base = by_variant.get("baseline")
    rows = []
    for variant, accs in by_variant.items():
        mean, std = statistics.fmean(accs), (statistics.stdev(accs) if len(accs) > 1 else float("nan"))
        row = {"variant": variant, "n": len(accs), "mean": mean, "std": std}
        if base and variant != "baseline":
            delta = mean - statistics.fmean(base)
            spread = max(std, statistics.stdev(base) if len(base) > 1 else float("nan"))
            row["delta"] = delta
            if spread != spread:  # one seed: no spread to judge against
                row["verdict"] = "one seed: no spread to judge"
            elif abs(delta) <= spread:
                row["verdict"] = "no measurable effect at this budget"
            else:
                row["verdict"] = "helps" if delta > 0 else "hurts"
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| variant | test acc (mean ± std) | Δ vs baseline | seeds | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        delta = f"{100 * r['delta']:+.2f} pt" if "delta" in r else "-"
        std = f"{100 * r['std']:.2f}" if r["std"] == r["std"] else "n/a"
        lines.append(f"| {r['variant']} | {100 * r['mean']:.2f} ± {std} % | {delta} | {r['n']} | "
                     f"{r.get('verdict', '-')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", help="CIFAR-10 folder (default: $ZOO_DATA_DIR, else ./data)")
    parser.add_argument("--student", default="cifar_cnn", help="registered model trained in every variant")
    parser.add_argument("--teacher", default="cifar_resnet_cifar10", help="zoo.load source for distillation")
    parser.add_argument("--epochs", type=int, default=30, help="training budget per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limit", help="batches (int) or fraction (float) of train/test per epoch, for smoke runs")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--val-size", type=int, default=5000, help="held out of training, as in the configs")
    parser.add_argument("--train-size", type=int, default=0,
                        help="train on a class-balanced seeded subset of this many images (0: the whole split)")
    parser.add_argument("--schedule", choices=SCHEDULES, help="the student's LR schedule (default: its own, cosine)")
    parser.add_argument("--swa-lr", type=float, default=0.01)
    parser.add_argument("--ema-decay", type=float, default=0.999)
    parser.add_argument("--kd-temperature", type=float, default=4.0, help="distillation temperature T")
    parser.add_argument("--kd-alpha", type=float, default=0.9, help="weight of the distillation term")
    parser.add_argument("--accelerator", default="auto")
    parser.add_argument("--precision", default="32-true", help="Lightning precision, e.g. bf16-mixed")
    parser.add_argument("--channels-last", action="store_true", help="channels-last student (faster with bf16 on CPU)")
    parser.add_argument("--teacher-softness", action="store_true", help="print the teacher's target entropy; train nothing")
    parser.add_argument("--merge", type=Path, nargs="+", help="summarise the runs of these JSON files; train nothing")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # one line per run, not Lightning's banners

    if args.teacher_softness:
        teacher_softness(args)
        return 0
    if args.merge:
        parts = [json.loads(f.read_text()) for f in args.merge]
        config = {**parts[0]["config"], "seeds": sorted({r["seed"] for p in parts for r in p["runs"]}),
                  "merged_from": [f.name for f in args.merge]}
        return report([r for p in parts for r in p["runs"]], config, args.out)
    runs = []
    for variant in args.variants:
        for seed in args.seeds:
            runs.append(run_one(variant, seed, args))
            print(f"{variant:>13} seed {seed}: test/acc {runs[-1]['test_acc']:.4f} ({runs[-1]['seconds']} s)",
                  flush=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "merge"}
    return report(runs, config, args.out)


def report(runs: list[dict], config: dict, out: Path) -> int:
    rows = summarise(runs)
    limited = f", limit {config['limit']}" if config["limit"] else ""
    subset = f", {config['train_size']} training images" if config.get("train_size") else ""
    subset += f", {config['schedule']} LR" if config.get("schedule") else ""
    print(f"\n{config['student']}, {config['epochs']} epochs{subset}{limited}, seeds {config['seeds']}, "
          f"precision {config.get('precision', '32-true')}\n")
    print(table(rows))
    config.setdefault("machine", machine())  # a merge keeps the machine its runs recorded
    out.write_text(json.dumps({"config": config, "summary": rows, "runs": runs}, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
