"""Lightning overhead: the zoo's LightningModule under ``Trainer.fit`` vs a hand-written PyTorch loop.

    python benchmarks/overhead.py                 # flagship (batch 256) and a tiny net (classic CNN, batch 8)
    python benchmarks/overhead.py --repeats 7

Both arms train the same model object type from the same seed on the same in-memory batches (the zoo's
``TensorBatches`` loader), with the same optimizer and parameter groups, constant learning rate, and time the same
window: from the first step after ``warmup`` steps to the end of training. Arms:
  * ``hand``: forward, cross-entropy, ``zero_grad``/``backward``/``step`` in a for loop;
  * ``zoo``: ``Trainer.fit`` with logger, progress bar, checkpointing and model summary off;
  * ``zoo_default``: ``Trainer.fit`` with the zoo's defaults on: CSV logger, progress bar, a checkpoint at the end.
Rounds alternate the arms' order; reported: per-step times, the step-time ratio to ``hand`` (median, min, max over
rounds) and the extra milliseconds per step. Writes ``overhead.json`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import zoo  # noqa: E402
from _bench import alternate, machine, ratio_stats, timer, write_json  # noqa: E402
from datamodules.cifar import TensorBatches, keep_batch  # noqa: E402

NETS = {  # name -> (registry name, constructor overrides, batch size, steps)
    "flagship": ("cifar_resnet", {"channels_last": True, "lookahead": False}, 256, 8),
    "tiny": ("cifar_cnn", {}, 8, 400),
}
WARMUP = 3


def make(name: str):
    reg, kwargs, batch, steps = NETS[name]
    torch.manual_seed(0)
    model = zoo.get_model(reg, schedule="constant", warmup=0.0, tta=0, **kwargs)
    g = torch.Generator().manual_seed(1)
    n = batch * steps
    data = TensorBatches(torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    loader = DataLoader(data, batch_size=batch, shuffle=False, collate_fn=keep_batch)
    return model, loader


class Clock(L.Callback):
    """Seconds per step from the start of step ``warmup`` to the end of training."""

    def __init__(self, warmup: int):
        self.warmup, self.stop, self.per_step = warmup, None, float("nan")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            self.stop = timer()

    def on_train_end(self, trainer, pl_module) -> None:
        self.per_step = self.stop() / (trainer.global_step - self.warmup)


def hand(name: str) -> float:
    model, loader = make(name)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    if hasattr(model, "net") and hasattr(model.net, "whitened"):
        model.net.whitened.fill_(True)  # the zoo arm whitens from its first batch, before the timed window
    if model.hparams.channels_last:
        model.to(memory_format=torch.channels_last)
    opt = model.configure_optimizers()
    smoothing = model.hparams.label_smoothing
    stop, steps = None, 0
    for i, (x, y) in enumerate(loader):
        if i == WARMUP:
            stop = timer()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = F.cross_entropy(model(x), y, label_smoothing=smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return stop() / (steps - WARMUP)


def with_trainer(name: str, defaults: bool) -> float:
    model, loader = make(name)
    clock = Clock(WARMUP)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="auto", devices=1, max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0,
            logger=CSVLogger(tmp) if defaults else False, enable_progress_bar=defaults,
            enable_checkpointing=defaults, enable_model_summary=False, callbacks=[clock], default_root_dir=tmp,
            log_every_n_steps=50,
        )
        trainer.fit(model, train_dataloaders=loader)
    return clock.per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no per-run banners between rows
    result = {"repeats": args.repeats, "warmup_steps": WARMUP, "nets": {}}
    previous = Path(__file__).with_suffix(".json")
    if previous.is_file():  # a run of some nets keeps the others' last numbers
        result["nets"] = {k: v for k, v in json.loads(previous.read_text()).get("nets", {}).items() if k not in args.nets}
    for name in args.nets:
        times = alternate({"hand": lambda: hand(name), "zoo": lambda: with_trainer(name, False),
                           "zoo_default": lambda: with_trainer(name, True)}, args.repeats)
        row = {"model": NETS[name][0], "batch_size": NETS[name][2], "timed_steps": NETS[name][3] - WARMUP}
        for arm, values in times.items():
            row[f"{arm}_ms_per_step"] = 1e3 * statistics.median(values)
        for arm in ("zoo", "zoo_default"):
            row[f"{arm}_ratio"] = ratio_stats(times[arm], times["hand"])
            row[f"{arm}_extra_ms_per_step"] = 1e3 * statistics.median(
                [a - b for a, b in zip(times[arm], times["hand"])])
        result["nets"][name] = row
    print(f"\n{machine()}\n")
    header = f"{'net':<10}{'batch':>6}{'hand ms':>10}{'zoo ms':>10}{'ratio [min, max]':>24}{'extra ms':>10}" \
             f"{'default ms':>12}{'ratio [min, max]':>24}{'extra ms':>10}"
    print(header)
    for name, r in result["nets"].items():  # (rows kept from an earlier run are printed too)
        fmt = lambda s: f"{s['median']:.3f} [{s['min']:.3f}, {s['max']:.3f}]"  # noqa: E731
        print(f"{name:<10}{r['batch_size']:>6}{r['hand_ms_per_step']:>10.2f}{r['zoo_ms_per_step']:>10.2f}"
              f"{fmt(r['zoo_ratio']):>24}{r['zoo_extra_ms_per_step']:>10.2f}{r['zoo_default_ms_per_step']:>12.2f}"
              f"{fmt(r['zoo_default_ratio']):>24}{r['zoo_default_extra_ms_per_step']:>10.2f}")
    print(f"\nwrote {write_json(__file__, result)}")


if __name__ == "__main__":
    main()
