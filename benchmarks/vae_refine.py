"""How much per-image posterior refinement (``VAE.refine``, semi-amortized inference) tightens a trained VAE's
ELBO, on MNIST's validation images (the 5,000 held out of the training split; the test set stays untouched).

    ZOO_DATA_DIR=../shared/data python benchmarks/vae_refine.py vae_mnist_long --settings 0 10@0.05 20@0.05 50@0.05

Each setting is STEPS@LR: that many Adam steps at that learning rate on each image's mean and log-variance,
starting from the encoder's, the networks fixed. Every setting scores the same images with the same seeded z
draws (one sample per image, as the model's test does). Prints the mean -ELBO in nats per image and the seconds
each setting took; writes ``vae_refine.json`` next to this file (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from _bench import machine
from zoo.datamodules import MNISTDataModule

import zoo


def parse_setting(text: str) -> tuple[int, float]:
    steps, _, lr = text.partition("@")
    return int(steps), float(lr or 0.02)


def val_batches(data_dir: str, batch_size: int, limit: int | None, val_size: int) -> list[torch.Tensor]:
    dm = MNISTDataModule(data_dir=data_dir, batch_size=batch_size, val_size=val_size)
    dm.setup("fit")
    batches = []
    for batch in dm.val_dataloader():
        batches.append(dm.on_after_batch_transfer(batch, 0)[0])  # uint8 -> [0, 1], as in training
        if limit and sum(len(b) for b in batches) >= limit:
            break
    return batches


def score(net, batches: list[torch.Tensor], steps: int, lr: float) -> float:
    total = count = 0
    with torch.no_grad():
        for i, x in enumerate(batches):
            posterior = net.refine(x, *net.encode(x), steps=steps, lr=lr,
                                   generator=torch.Generator().manual_seed(i + 2**30))
            out = net.losses(x, generator=torch.Generator().manual_seed(i), posterior=posterior)
            total, count = total + out["nelbo"].item() * len(x), count + len(x)
    return total / count


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="a VAE: published name, card or .ckpt")
    p.add_argument("--settings", nargs="+", default=["0", "10@0.05", "20@0.05", "50@0.05"], help="STEPS@LR ...")
    p.add_argument("--data-dir", default=os.environ.get("ZOO_DATA_DIR", "data"))
    p.add_argument("--images", type=int, help="score only the first this many val images (default: all 5,000)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--val-size", type=int, default=5000, help="the held-out split, as the model was trained with")
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = p.parse_args(argv)
    net = zoo.load(args.source)
    batches = val_batches(args.data_dir, args.batch_size, args.images, args.val_size)
    n = sum(len(b) for b in batches)
    rows = []
    print(f"{args.source}: val -ELBO (nats per image) on {n} images, one seeded z sample each")
    print("| refinement steps | learning rate | val -ELBO | seconds |\n|---|---|---|---|")
    for text in args.settings:
        steps, lr = parse_setting(text)
        start = time.perf_counter()
        nelbo = score(net, batches, steps, lr)
        rows.append({"steps": steps, "lr": lr, "val_nelbo": round(nelbo, 3),
                     "seconds": round(time.perf_counter() - start, 1)})
        print(f"| {steps} | {lr if steps else '-'} | {nelbo:.3f} | {rows[-1]['seconds']} |", flush=True)
    result = {"machine": machine(), "source": args.source, "images": n, "rows": rows,
              "command": " ".join(["python", "benchmarks/vae_refine.py", *(argv if argv is not None else sys.argv[1:])])}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
