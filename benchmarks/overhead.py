"""Lightning overhead: the zoo's LightningModule under ``Trainer.fit`` vs a hand-written PyTorch loop.

    python benchmarks/overhead.py                 # flagship (batch 256) and a tiny net (classic CNN, batch 8)
    python benchmarks/overhead.py --repeats 7

Both arms train the same model object type from the same seed on the same in-memory batches (the zoo's
``TensorBatches`` loader), with the same optimizer and parameter groups, constant learning rate, and time the same
window: from the first step after ``warmup`` steps to the end of training. Arms:
  * ``hand``: forward, cross-entropy, ``zero_grad``/``backward``/``step`` in a for loop;
  * ``lightning``: ``Trainer.fit`` of the same model with its ``training_step`` cut to the hand loop's forward and
    cross-entropy (no ``self.log``, no metric): Lightning's own per-step cost, which the zoo cannot change;
  * ``zoo``: ``Trainer.fit`` with logger, progress bar, checkpointing and model summary off;
  * ``zoo_default``: ``Trainer.fit`` with the zoo's defaults on: CSV logger, progress bar, a checkpoint at the end.
Rounds alternate the arms' order; reported: per-step times, the step-time ratio to ``hand`` (median, min, max over
rounds) and the extra milliseconds per step; ``zoo`` minus ``lightning`` is what the zoo's own step adds. Writes ``overhead.json`` next to this file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import types
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

import zoo  # noqa: E402
from _bench import alternate, machine, ratio_stats, timer, write_json  # noqa: E402
from zoo.datamodules.common import TensorBatches, keep_batch

NETS = {  # name -> (registry name, constructor overrides, batch size, steps)
    "flagship": ("cifar_resnet", {"channels_last": True, "lookahead": False}, 256, 8),
    "tiny": ("cifar_cnn", {}, 8, 400),
}
WARMUP = 3
ARMS = ("lightning", "zoo", "zoo_default")  # each timed against "hand"


def median_difference_ms(a: list[float], b: list[float]) -> float:
    """Median over rounds of ``a - b`` (seconds per step), in milliseconds."""
    return 1e3 * statistics.median([x - y for x, y in zip(a, b)])


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


def hand(name: str) -> tuple[float, torch.nn.Module]:
    """Seconds per timed step of the hand-written loop, and the trained model."""
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
    return stop() / (steps - WARMUP), model


def bare_training_step(self, batch, batch_idx: int) -> torch.Tensor:
    """The hand loop's step as a ``training_step``: forward and cross-entropy, nothing logged or measured."""
    x, y = batch
    return F.cross_entropy(self(x), y, label_smoothing=self.hparams.label_smoothing)


def with_trainer(name: str, defaults: bool, bare: bool = False) -> tuple[float, torch.nn.Module]:
    """Seconds per timed step under ``Trainer.fit`` (zoo defaults on or off; ``bare``: the hand loop's step), and
    the trained model."""
    model, loader = make(name)
    if bare:
        model.training_step = types.MethodType(bare_training_step, model)
        model.on_train_epoch_end = lambda: None  # (train/acc is never updated)
    clock = Clock(WARMUP)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(
            accelerator="auto", devices=1, max_epochs=1, limit_val_batches=0, num_sanity_val_steps=0,
            logger=CSVLogger(tmp) if defaults else False, enable_progress_bar=defaults,
            enable_checkpointing=defaults, enable_model_summary=False, callbacks=[clock], default_root_dir=tmp,
            log_every_n_steps=50,
        )
        trainer.fit(model, train_dataloaders=loader)
    return clock.per_step, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up round")
    parser.add_argument("--nets", nargs="+", default=list(NETS), choices=list(NETS))
    parser.add_argument("--flagship-steps", type=int, default=NETS["flagship"][3],
                        help=f"steps per flagship run, {WARMUP} of them warm-up (more steps, less noise)")
    args = parser.parse_args()
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no per-run banners between rows
    NETS["flagship"] = (*NETS["flagship"][:3], args.flagship_steps)
    result = {"repeats": args.repeats, "warmup_steps": WARMUP, "nets": {}}
    previous = Path(__file__).with_suffix(".json")
    if previous.is_file():  # a run of some nets keeps the others' last numbers
        result["nets"] = {k: v for k, v in json.loads(previous.read_text()).get("nets", {}).items() if k not in args.nets}
    for name in args.nets:
        times = alternate({"hand": lambda: hand(name)[0], "lightning": lambda: with_trainer(name, False, bare=True)[0],
                           "zoo": lambda: with_trainer(name, False)[0],
                           "zoo_default": lambda: with_trainer(name, True)[0]}, args.repeats)
        row = {"model": NETS[name][0], "batch_size": NETS[name][2], "timed_steps": NETS[name][3] - WARMUP}
        for arm, values in times.items():
            row[f"{arm}_ms_per_step"] = 1e3 * statistics.median(values)
        for arm in ARMS:
            row[f"{arm}_ratio"] = ratio_stats(times[arm], times["hand"])
            row[f"{arm}_extra_ms_per_step"] = median_difference_ms(times[arm], times["hand"])
        row["zoo_over_lightning_ms_per_step"] = median_difference_ms(times["zoo"], times["lightning"])
        result["nets"][name] = row
    print(f"\n{machine()}\n")
    print(f"{'net':<10}{'batch':>6}  {'arm':<12}{'ms/step':>10}{'ratio to hand [min, max]':>28}{'extra ms':>10}")
    for name, r in result["nets"].items():  # (rows kept from an earlier run are printed too)
        print(f"{name:<10}{r['batch_size']:>6}  {'hand':<12}{r['hand_ms_per_step']:>10.2f}")
        for arm in (a for a in ARMS if f"{a}_ratio" in r):
            ratio = r[f"{arm}_ratio"]
            spread = f"{ratio['median']:.3f} [{ratio['min']:.3f}, {ratio['max']:.3f}]"
            print(f"{'':<18}{arm:<12}{r[f'{arm}_ms_per_step']:>10.2f}{spread:>28}{r[f'{arm}_extra_ms_per_step']:>10.2f}")
        if "zoo_over_lightning_ms_per_step" in r:
            print(f"{'':<18}zoo's own step over Lightning's floor: {r['zoo_over_lightning_ms_per_step']:+.2f} ms")
    print(f"\nwrote {write_json(__file__, result)}")


if __name__ == "__main__":
    main()
