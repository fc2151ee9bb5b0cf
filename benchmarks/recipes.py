"""The training-recipe tables of the README ("Training recipes"): each arm is `python -m zoo fit` then `zoo test` on
the real data, side by side at an equal budget, in this one job. Accuracy and macro-F1 on the test set.

    ZOO_DATA_DIR=../shared/data python benchmarks/recipes.py imbalance   # long-tailed CIFAR-10 (ratio 100), 2 seeds
    ZOO_DATA_DIR=../shared/data python benchmarks/recipes.py onecycle    # classic CNN: OneCycle vs the cosine schedule
    ZOO_DATA_DIR=../shared/data python benchmarks/recipes.py lr_finder   # the finder's suggestion vs the config's LR
    ZOO_DATA_DIR=../shared/data python benchmarks/recipes.py augment     # EfficientNet/hymenoptera: TrivialAugment vs none
    ZOO_DATA_DIR=../shared/data python benchmarks/recipes.py pseudo      # 4,000 labels: supervised vs pseudo-labelled

Each table prints with the CPU it ran on and is kept in benchmarks/recipes.json (one entry per table).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _bench import machine  # noqa: E402

CLASSIC = ["--model", "CifarCNN", "--data", "CIFAR10DataModule", "--trainer.enable_progress_bar", "false"]


def zoo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if env.get("ZOO_DATA_DIR"):  # the runs work in a temporary folder: a relative path would point elsewhere
        env["ZOO_DATA_DIR"] = str(Path(env["ZOO_DATA_DIR"]).resolve())
    run = subprocess.run([sys.executable, "-m", "zoo", *args], capture_output=True, text=True, env=env, cwd=cwd,
                         check=False)
    if run.returncode != 0:
        raise SystemExit(f"zoo {' '.join(args)} failed:\n{run.stderr[-3000:]}")
    return run


def last_row_with(root: Path, key: str) -> dict[str, float]:
    """The last row of ``root``'s newest metrics.csv that has ``key``."""
    path = max(root.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    with path.open() as f:
        rows = [r for r in csv.DictReader(f) if r.get(key)]
    return {k: float(v) for k, v in rows[-1].items() if v}


def fit_and_test(name: str, args: list[str], work: Path, test_args: list[str] | None = None) -> dict:
    """Train with ``args``, test the final weights (last.ckpt) on the test set; test/acc and test/f1_macro."""
    root = work / name
    zoo("fit", *args, "--trainer.default_root_dir", str(root), cwd=work)
    ckpt = sorted(root.rglob("last.ckpt"))[-1]
    zoo("test", *(test_args if test_args is not None else args), "--ckpt_path", str(ckpt),
        "--trainer.default_root_dir", str(root / "test"), cwd=work)
    metrics = last_row_with(root / "test", "test/acc")
    print(f"  {name:<34} acc {metrics['test/acc']:.4f}  macro-F1 {metrics.get('test/f1_macro', float('nan')):.4f}",
          flush=True)
    return {"arm": name, "acc": metrics["test/acc"], "f1_macro": metrics.get("test/f1_macro"), "args": args}


def imbalance(work: Path, epochs: int) -> list[dict]:
    """Long-tailed CIFAR-10 (ratio 100), classic CNN, equal steps: plain CE, class-weighted CE, focal, oversampling."""
    arms = {"cross-entropy": [], "class-weighted (balanced)": ["--model.class_weights", "balanced"],
            "focal (gamma 2)": ["--model.loss", "focal"], "balanced sampler (oversample)": ["--data.sampling",
                                                                                           "oversample"]}
    rows = []
    for seed in (0, 1):
        for arm, extra in arms.items():
            args = [*CLASSIC, "--data.imbalance_ratio", "100", "--seed_everything", str(seed), "--data.seed",
                    str(seed), "--trainer.max_epochs", str(epochs), *extra]
            rows.append({**fit_and_test(f"{arm} seed {seed}", args, work), "seed": seed, "method": arm})
    return rows


def onecycle(work: Path, epochs: int) -> list[dict]:
    """Classic CNN on CIFAR-10 at equal epochs: the default cosine schedule vs OneCycle (torch's OneCycleLR)."""
    base = [*CLASSIC, "--trainer.max_epochs", str(epochs)]
    return [fit_and_test("cosine (default)", base, work),
            fit_and_test("onecycle", [*base, "--model.schedule", "onecycle"], work)]


def lr_finder(work: Path, epochs: int) -> list[dict]:
    """Lightning's LR finder (Tuner.lr_find, as configs/callbacks/lr_finder.yaml runs it) on the classic CNN, its
    curve drawn to docs/images/lr_finder_cifar_cnn.svg, then a short run at its suggestion and at the config's LR."""
    import math

    import lightning as L
    from lightning.pytorch.tuner import Tuner
    from plots import svg_plot

    import zoo
    from zoo.datamodules.cifar import CIFAR10DataModule

    L.seed_everything(0)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        max_epochs=1, default_root_dir=str(work))
    finder = Tuner(trainer).lr_find(zoo.get_model("cifar_cnn"), datamodule=CIFAR10DataModule(), min_lr=1e-5,
                                    max_lr=1.0, num_training=100)
    suggestion = float(finder.suggestion())
    curve = [(math.log10(lr), loss) for lr, loss in zip(finder.results["lr"], finder.results["loss"])]
    image = ROOT / "docs" / "images" / "lr_finder_cifar_cnn.svg"
    image.write_text(svg_plot(curve[::6], f"LR finder, classic CNN on CIFAR-10: suggestion {suggestion:.3g}",
                              "log10 learning rate", "training loss (smoothed)", yfmt="{:.2f}", xfmt="{:.1f}"))
    print(f"  finder suggests {suggestion:.3g}; curve: {image.relative_to(ROOT)}", flush=True)
    base = [*CLASSIC, "--trainer.max_epochs", str(epochs)]
    return [{**fit_and_test("config LR 0.05", base, work), "lr": 0.05},
            {**fit_and_test(f"finder's LR {suggestion:.3g}", [*base, "--model.lr", str(suggestion)], work),
             "lr": suggestion, "curve": curve}]


def augment(work: Path, epochs: int) -> list[dict]:
    """EfficientNet-Lite0 on hymenoptera, the published config's budget: no policy vs TrivialAugment."""
    base = ["--config", str(ROOT / "configs/efficientnet_hymenoptera.yaml"), "--config",
            str(ROOT / "configs/trainer/cpu.yaml"), "--trainer.enable_progress_bar", "false"]
    return [fit_and_test("no policy (published recipe)", base, work),
            fit_and_test("trivialaugment", [*base, "--data.init_args.augment_policy", "trivialaugment"], work)]


def pseudo(work: Path, epochs: int) -> list[dict]:
    """CIFAR-10 with 4,000 labels: the classic CNN on them alone vs on them plus the published flagship's
    pseudo-labels of the other images (confidence >= 0.9), equal student steps."""
    labelled = [*CLASSIC, "--data.labelled", "4000", "--trainer.max_steps", str(epochs * 400),
                "--trainer.max_epochs", "-1", "--data.val_size", "5000"]
    labels = work / "pseudo_labels.safetensors"
    zoo("pseudo-label", "cifar_resnet_cifar10", "--labelled", "4000", "--out", str(labels), cwd=work)
    test = [*CLASSIC]
    return [fit_and_test("4,000 labels only", labelled, work, test),
            fit_and_test("+ pseudo-labels (p >= 0.9)", [*labelled, "--data.pseudo_labels", str(labels),
                                                       "--data.pseudo_threshold", "0.9"], work, test)]


TABLES = {"imbalance": (imbalance, 15), "onecycle": (onecycle, 8), "lr_finder": (lr_finder, 3),
          "augment": (augment, 0), "pseudo": (pseudo, 5)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", choices=list(TABLES))
    parser.add_argument("--epochs", type=int, help="training length (default: the table's own)")
    args = parser.parse_args()
    run, default_epochs = TABLES[args.table]
    print(f"{args.table} on {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(Path(tmp), args.epochs or default_epochs)
    out = Path(__file__).with_suffix(".json")
    results = json.loads(out.read_text()) if out.is_file() else {}
    results[args.table] = {"machine": machine(), "epochs": args.epochs or default_epochs, "rows": rows}
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
