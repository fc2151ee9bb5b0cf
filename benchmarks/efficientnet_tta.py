"""Val images right for trained EfficientNet hymenoptera runs under test-time augmentation, and for their soup.

    ZOO_DATA_DIR=../shared/data python benchmarks/efficientnet_tta.py RUN_A/last.ckpt RUN_B/last.ckpt ... [--soup]

For each checkpoint (a .ckpt, a card or a published name), and with ``--soup`` for the uniform average of their
weights (a "model soup", Wortsman et al. 2022, built with torch's ``AveragedModel``; the runs must share the
architecture and pretrained start): how many val images are right with no TTA, the mirror (TTA 1), mirror plus
1-pixel shifts (TTA 2), at the training resolution and at ``--larger`` pixels more, and with the mirror averaged over
both resolutions (multi-scale). Also lists the images the mirror TTA gets wrong at the training resolution, with the
probability it gives the true class. Writes ``efficientnet_tta.json`` next to this file (or ``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from _bench import machine
from torch.optim.swa_utils import AveragedModel

import zoo
from zoo.classifier import tta_logits


def val_images(folder: Path, data_config: dict, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The val split at ``size`` px with the model's eval transform (timm's, as ImageFolderDataModule builds it)."""
    from timm.data import create_transform
    from torchvision.datasets import ImageFolder

    ds = ImageFolder(str(folder), create_transform(**{**data_config, "input_size": (3, size, size)}))
    images = torch.stack([ds[i][0] for i in range(len(ds))])
    return images, torch.tensor(ds.targets), [Path(p).name for p, _ in ds.samples]


@torch.no_grad()
def logits(net: torch.nn.Module, images: torch.Tensor, level: int, batch: int = 8) -> torch.Tensor:
    return torch.cat([tta_logits(net, images[i : i + batch], level) for i in range(0, len(images), batch)])


def soup(models: list[torch.nn.Module]) -> torch.nn.Module:
    """The uniform average of the models' parameters (buffers: the first model's; frozen BatchNorm statistics)."""
    avg = AveragedModel(models[0])
    for m in models:
        avg.update_parameters(m)
    return avg.module.eval()


def score(name: str, net: torch.nn.Module, folder: Path, larger: int, cache: dict) -> dict:
    size = net.hparams.image_size or 224
    row, mirrored = {"model": name, "size": size}, {}
    for s in (size, size + larger):
        if s not in cache:
            cache[s] = val_images(folder, net.data_config, s)
        images, targets, files = cache[s]
        for level in (0, 1, 2):
            out = logits(net, images, level)
            row[f"{s}px_tta{level}"] = int((out.argmax(1) == targets).sum())
            if level == 1:
                mirrored[s] = out.softmax(1)
    prob = mirrored[size]
    wrong = (prob.argmax(1) != targets).nonzero().flatten().tolist()
    row["multiscale_tta1"] = int((sum(mirrored.values()).argmax(1) == targets).sum())
    row["wrong_tta1"] = {files[i]: round(prob[i, targets[i]].item(), 2) for i in wrong}
    row["images"] = len(targets)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoints", nargs="+", help="runs' .ckpt files, cards or published names")
    p.add_argument("--data-dir", default=os.environ.get("ZOO_DATA_DIR", "data"))
    p.add_argument("--split", default="hymenoptera_data/val", help="class folders under --data-dir")
    p.add_argument("--larger", type=int, default=64, help="the second test resolution: this many pixels more")
    p.add_argument("--soup", action="store_true", help="also score the average of the checkpoints' weights")
    p.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = p.parse_args(argv)
    folder = Path(args.data_dir) / args.split
    if not folder.is_dir():
        print(f"efficientnet_tta: no folder {folder}; pass --data-dir (or set ZOO_DATA_DIR)", file=sys.stderr)
        return 2
    models = {c: zoo.load(c).eval() for c in args.checkpoints}
    if args.soup:
        models[f"soup of {len(models)}"] = soup(list(models.values()))
    cache, rows = {}, []
    cols = ["px_tta0", "px_tta1", "px_tta2"]
    print(f"| model | size | {' | '.join('train ' + c[3:] for c in cols)} | "
          f"{' | '.join(f'+{args.larger} px ' + c[3:] for c in cols)} | multi-scale tta1 |")
    print("|---" * 9 + "|")
    for name, net in models.items():
        row = score(name, net, folder, args.larger, cache)
        rows.append(row)
        s = row["size"]
        counts = [row[f"{s}{c}"] for c in cols] + [row[f"{s + args.larger}{c}"] for c in cols]
        print(f"| {name} | {s} | {' | '.join(map(str, counts))} | {row['multiscale_tta1']} |", flush=True)
    for row in rows:
        print(f"{row['model']}: wrong with the mirror TTA (p of the true class): {row['wrong_tta1']}")
    result = {"machine": machine(), "command": " ".join(["python", "benchmarks/efficientnet_tta.py", *(argv or sys.argv[1:])]),
              "rows": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
