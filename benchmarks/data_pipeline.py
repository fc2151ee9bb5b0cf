"""Data pipeline vs model: batches per second the CIFAR DataModule delivers (loading, random crop, flip,
normalisation, as in training) against batches per second the flagship consumes, at the flagship's batch size.

    ZOO_DATA_DIR=../shared/data python benchmarks/data_pipeline.py

Uses the real CIFAR-10 when ``$ZOO_DATA_DIR`` has it (its uint8 cache is built on the first run, outside the
timing); otherwise random uint8 images of the same shape. Writes ``data_pipeline.json`` next to this file.
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch

import zoo  # noqa: E402
from _bench import flagship_sgd_step, machine, timer, write_json  # noqa: E402
from zoo.datamodules.cifar import CIFAR10DataModule, CIFAR10NotFoundError
from zoo.datamodules.common import TensorBatches


def datamodule(batch_size: int) -> tuple[CIFAR10DataModule, str]:
    dm = CIFAR10DataModule(batch_size=batch_size, crop_padding=2, flip="alternate", val_size=2000, download=False)
    try:
        dm.setup("fit")
        return dm, "CIFAR-10 from " + str(dm.data_dir)
    except CIFAR10NotFoundError:
        g = torch.Generator().manual_seed(0)
        dm.datasets = {"train": TensorBatches(torch.randint(0, 256, (48000, 3, 32, 32), dtype=torch.uint8,
                                                            generator=g), torch.randint(0, 10, (48000,)))}
        return dm, "random uint8 images (no CIFAR-10 found)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--model-steps", type=int, default=2, help="timed training steps (after one warm-up)")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dm, source = datamodule(args.batch_size)
    dm.trainer = SimpleNamespace(training=True, current_epoch=1)  # on_after_batch_transfer's view of the loop

    batches, stop = 0, timer()
    for epoch in range(2):  # two epochs: the plain one and the all-flipped one
        dm.trainer.current_epoch = epoch
        for x, y in dm.train_dataloader():
            x, y = dm.on_after_batch_transfer((x.to(device), y.to(device)), 0)
            batches += 1
    data_bps = batches / stop()

    model = zoo.get_model("cifar_resnet", channels_last=True, lookahead=False).to(device)
    model.to(memory_format=torch.channels_last)
    step, times = flagship_sgd_step(model), []
    for i in range(args.model_steps + 1):
        stop = timer()
        step(x, y)
        if i:
            times.append(stop())
    model_bps = 1 / min(times)
    result = {"data": source, "batch_size": args.batch_size, "data_batches_per_s": data_bps,
              "model_batches_per_s": model_bps, "data_over_model": data_bps / model_bps}
    print(f"\n{machine()}\n{source}, batch {args.batch_size}\n")
    print(f"{'DataModule delivers':<24}{data_bps:>10.2f} batches/s")
    print(f"{'flagship consumes':<24}{model_bps:>10.3f} batches/s")
    print(f"{'ratio':<24}{data_bps / model_bps:>10.0f} x   (target >= 10 x)")
    print(f"\nwrote {write_json(__file__, result)}")


if __name__ == "__main__":
    main()
