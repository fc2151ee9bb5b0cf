"""Precision and compilation switches for the flagship, each against fp32 eager, side by side in one job.

    python benchmarks/switches.py [--repeats 3]

Arms (CPU): fp32 eager (baseline), channels_last, ``bf16-mixed``, ``torch.compile``; on CUDA ``16-mixed`` and
``bf16-mixed`` instead. Each arm is ``Trainer.fit`` of the flagship on in-memory batches, timed from the first step
after the warm-up steps (which also absorb compilation) to the end; rounds alternate the arms' order. Reported:
images per second and the speed-up over fp32 eager (median, min, max over rounds). The zoo's CPU defaults follow
from it (README, "Performance"). Writes ``switches.json`` (``switches.cuda.json`` on a GPU) next to this file.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile

import lightning as L
import torch
from torch.utils.data import DataLoader

import zoo  # noqa: E402
from _bench import alternate, machine, ratio_stats, write_json  # noqa: E402
from zoo.datamodules.common import TensorBatches, keep_batch
from overhead import Clock  # noqa: E402

WARMUP = 3


def run(batch: int, steps: int, channels_last: bool = False, precision: str = "32-true", compile: bool = False):
    torch.manual_seed(0)
    model = zoo.get_model("cifar_resnet", channels_last=channels_last, lookahead=False, schedule="constant",
                          warmup=0.0)
    g = torch.Generator().manual_seed(1)
    data = TensorBatches(torch.randn(batch * steps, 3, 32, 32, generator=g),
                         torch.randint(0, 10, (batch * steps,), generator=g))
    loader = DataLoader(data, batch_size=batch, collate_fn=keep_batch)
    clock = Clock(WARMUP)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(accelerator="auto", devices=1, max_epochs=1, precision=precision, logger=False,
                            enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0, callbacks=[clock], default_root_dir=tmp)
        trainer.fit(torch.compile(model) if compile else model, train_dataloaders=loader)
    return clock.per_step / batch  # seconds per image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=6, help=f"steps per run, the first {WARMUP} untimed")
    parser.add_argument("--skip", nargs="*", default=[], help="arms to leave out, e.g. torch.compile")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    b, s = args.batch_size, args.steps
    arms = {"fp32 eager": lambda: run(b, s), "channels_last": lambda: run(b, s, channels_last=True)}
    if torch.cuda.is_available():
        arms["16-mixed"] = lambda: run(b, s, precision="16-mixed")
    arms["bf16-mixed"] = lambda: run(b, s, precision="bf16-mixed")
    arms["torch.compile"] = lambda: run(b, s, compile=True)
    arms = {k: v for k, v in arms.items() if k not in args.skip}
    times = alternate(arms, args.repeats)
    base = times["fp32 eager"]
    rows = {name: {"images_per_s": 1 / statistics.median(v), "speedup": ratio_stats(base, v)}
            for name, v in times.items()}
    print(f"\n{machine()}\nflagship, batch {b}, {s - WARMUP} timed steps per run, {args.repeats} rounds\n")
    print(f"{'arm':<16}{'img/s':>10}{'speed-up vs fp32 eager [min, max]':>40}")
    for name, r in rows.items():
        sp = r["speedup"]
        print(f"{name:<16}{r['images_per_s']:>10.1f}{sp['median']:>22.3f} [{sp['min']:.3f}, {sp['max']:.3f}]")
    result = {"batch_size": b, "timed_steps": s - WARMUP, "repeats": args.repeats, "arms": rows}
    print(f"\nwrote {write_json(__file__, result)}")


if __name__ == "__main__":
    main()
