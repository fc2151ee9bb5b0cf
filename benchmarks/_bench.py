"""What the benchmark scripts share: the machine's description, side-by-side timing, the JSON they write.

Measurements are ratios of runs made in the same job, alternated (A B, B A, ...) so drift in the machine's speed
(turbo, other jobs) falls on both arms alike; the first round is a warm-up and is discarded.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def machine() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


@torch.no_grad()
def test_accuracy(net: torch.nn.Module, dm, level: int = 0) -> float:
    """Accuracy of a classifier in eval mode on ``dm``'s test split (batches normalised by ``dm.normalize``), with
    test-time augmentation ``level`` (see ``zoo.classifier.tta_logits``)."""
    from zoo.classifier import tta_logits

    device = next(net.parameters()).device
    correct = total = 0
    for x, y in dm.test_dataloader():
        x, y = dm.normalize(x.to(device)), y.to(device)
        correct += (tta_logits(net, x, level).argmax(1) == y).sum().item()
        total += len(y)
    return correct / total


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def alternate(arms: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each arm (returning a seconds-per-unit measurement) ``repeats + 1`` times, rotating their order every
    round; the first round is a warm-up. Returns name -> list of ``repeats`` measurements, round by round."""
    names, out = list(arms), {n: [] for n in arms}
    for r in range(repeats + 1):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            value = arms[name]()
            if r > 0:
                out[name].append(value)
    return out


def ratio_stats(num: list[float], den: list[float]) -> dict[str, float]:
    """Median and spread (min, max) of per-round ratios ``num / den``."""
    ratios = [a / b for a, b in zip(num, den)]
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


def timer() -> Callable[[], float]:
    sync()
    start = time.perf_counter()

    def stop() -> float:
        sync()
        return time.perf_counter() - start

    return stop


def flagship_sgd_step(model: torch.nn.Module) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One plain training step of the flagship (label smoothing 0.2, Nesterov SGD), for timing the model alone."""
    import torch.nn.functional as F

    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.85, nesterov=True)

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(model(x), y, label_smoothing=0.2)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def write_json(script: str, result: dict) -> Path:
    """``benchmarks/<script>.json``, or ``<script>.<device>.json`` for a CUDA run, so CPU numbers stay put."""
    stem = Path(script).with_suffix("")
    path = stem.with_suffix(".cuda.json") if torch.cuda.is_available() else stem.with_suffix(".json")
    result = {"machine": machine(), **result}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path
