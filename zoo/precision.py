"""``--precision auto``: the training precision, channels_last and torch.compile of a model family, chosen by
measuring them on this machine's CPU (issue 26). The same choice differs between CPUs: bf16 autocast ran 0.08x fp32
on a CPU without native bf16 (AMD Zen 1), and from 0.7x (3x3 convolutions) to 2.8x (matmul) on one with
AVX512-BF16/AMX, so no fixed default suits both.

Usage:
    zoo fit --config configs/cifar_cnn.yaml --precision auto
    # zoo: --precision auto -> 32-true (bf16-mixed 0.74x fp32; ...)
    from zoo.precision import Workload, probe, choose
    result = probe(Workload.from_registry("cifar_cnn"))
    print(choose(result.arms))

How: a few training steps of the model on its ``example_batch()`` (batch sized like its config's, smaller when a step
would take longer than ``step_budget_s``) under each arm: ``32-true`` and, only where the CPU has native bf16
(``avx512_bf16``/``amx_bf16``, or ``bf16`` on ARM), ``bf16-mixed``; each with and without channels_last for models
that have that switch. The measurements are cached per (CPU model, CPU flags, torch version, threads, workload) in
``<zoo cache>/precision/`` and the choice is recomputed from them by :func:`choose`, a pure function.
torch.compile is chosen only from a probe that measured it (``probe(..., compile=True)``; benchmarks/precision_auto.py
does) and only when its compile time pays back twice within the run's known ``max_steps``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import json
import logging
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

CACHE_VERSION = 1
MARGIN = 0.10  # an arm must be >= 10 % faster than the one it replaces: smaller gains drown in run-to-run noise
BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX512-BF16, AMX), ARM (FEAT_BF16)


# ------------------------------------------------------------------------------------------------- the machine
@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none, e.g. macOS)."""
    fields: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return fields
    for line in text.split("\n\n", 1)[0].splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip(), value.strip())
    return fields


def cpu_model() -> str:
    """/proc/cpuinfo's "model name" (e.g. "AMD EPYC 7B12"), else what the platform module says."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine() or "unknown CPU"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (x86 "flags", ARM "Features")."""
    info = _cpuinfo()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic? Without it CPU bf16 autocast is emulated (0.08x fp32 on AMD Zen 1), so the probe does
    not even try it. Unknown (no /proc/cpuinfo) counts as no."""
    return bool(BF16_FLAGS & cpu_flags())


def machine_key() -> str:
    """Cache folder name: CPU model, a hash of its flags, torch version and thread count (all change the timings)."""
    flags = hashlib.sha256(" ".join(sorted(cpu_flags())).encode()).hexdigest()[:8]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", cpu_model()).strip("-")
    return f"{slug}-{flags}-torch{torch.__version__}-{torch.get_num_threads()}threads"


# ------------------------------------------------------------------------------------------------ the workload
@dataclass(frozen=True)
class Workload:
    """One training step of a family: ``model_class(**init_args)`` on its ``example_batch()`` repeated to
    ``batch_size`` rows (and token sequences to ``seq_len``)."""

    name: str
    model_class: type
    init_args: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    seq_len: int | None = None

    @classmethod
    def from_registry(cls, name: str, batch_size: int = 8, **init_args: Any) -> Workload:
        import zoo

        entry = zoo.model_entry(name)
        return cls(name, entry.cls, {**entry.fixed, **init_args}, batch_size)

    @classmethod
    def from_config(cls, cfg) -> Workload:
        """The workload a parsed LightningCLI config (``model``/``data`` in subclass mode) trains."""
        model_cfg = _plain(cfg.get("model"))
        model_class = _import(model_cfg["class_path"])
        init_args = {k: v for k, v in (model_cfg.get("init_args") or {}).items()
                     if not isinstance(v, dict) and k not in ("init_from", "fd_features")}  # no callables, no downloads
        if "pretrained" in init_args:
            init_args["pretrained"] = False  # random weights time the same; a probe must not download
        if init_args.get("vocab") == "" or ("vocab" in _arguments(model_class) and "vocab" not in init_args):
            init_args["vocab"] = "".join(chr(32 + i) for i in range(65))  # a corpus's size (Tiny Shakespeare: 65)
        name = model_class.__name__
        if "unfreeze_at_epoch" in _arguments(model_class):
            # The fit's costly phase: the whole net once it unfreezes, else images through the frozen backbone.
            frozen = init_args.get("unfreeze_at_epoch", _arguments(model_class)["unfreeze_at_epoch"].default) is None
            init_args["unfreeze_at_epoch"] = None if frozen else 0
            name += " (frozen)" if frozen else " (unfrozen)"
        data_cfg = _plain(cfg.get("data")) or {}
        data_args = {**_defaults(_import(data_cfg["class_path"])), **(data_cfg.get("init_args") or {})} \
            if data_cfg.get("class_path") else {}
        return cls(name, model_class, init_args, int(data_args.get("batch_size") or 8), data_args.get("seq_len"))

    @property
    def has_channels_last(self) -> bool:
        return "channels_last" in _arguments(self.model_class)

    @property
    def key(self) -> str:
        """File name of this workload's measurements: its name and a hash of what defines its step."""
        args = sorted((k, v) for k, v in self.init_args.items() if k != "channels_last")  # an arm, not the workload
        what = json.dumps([self.model_class.__qualname__, args, self.batch_size, self.seq_len], default=str)
        return f"{re.sub(r'[^A-Za-z0-9]+', '_', self.name).strip('_')}-{hashlib.sha256(what.encode()).hexdigest()[:10]}"

    def model(self, channels_last: bool = False) -> L.LightningModule:
        args = dict(self.init_args)
        if self.has_channels_last:
            args["channels_last"] = channels_last
        return self.model_class(**args)

    def batch(self, model: L.LightningModule, size: int) -> tuple[torch.Tensor, ...]:
        """``model.example_batch()`` with rows repeated to ``size`` (and integer sequences to ``seq_len``)."""
        out = []
        for t in model.example_batch():
            t = t.repeat(-(-size // len(t)), *[1] * (t.ndim - 1))[:size]
            if self.seq_len and t.ndim == 2 and not t.is_floating_point():
                t = t.repeat(1, -(-self.seq_len // t.shape[1]))[:, : self.seq_len]
            out.append(t)
        return tuple(out)


def _plain(value) -> Any:
    return value.as_dict() if hasattr(value, "as_dict") else value


def _import(path: str) -> type:
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _arguments(cls: type) -> dict:
    from zoo import constructor_arguments

    return constructor_arguments(cls)


def _defaults(cls: type) -> dict[str, Any]:
    return {k: p.default for k, p in _arguments(cls).items() if p.default is not p.empty}


# ---------------------------------------------------------------------------------------------------- the arms
@dataclass(frozen=True)
class Arm:
    precision: Literal["32-true", "bf16-mixed"] = "32-true"
    channels_last: bool = False
    compile: bool = False

    @property
    def name(self) -> str:
        return "+".join([self.precision] + ["channels_last"] * self.channels_last + ["compile"] * self.compile)


FP32 = Arm()


@dataclass
class Measurement:
    step_s: float  # median seconds per training step after the warm-up
    warmup_s: float  # seconds of the warm-up steps (compilation happens there)
    finite: bool  # every loss and parameter finite after the steps


@dataclass
class ProbeResult:
    workload: str
    batch_size: int
    arms: dict[Arm, Measurement]
    path: Path
    cached: bool = False
    note: str = ""  # e.g. why the cache was not used


def candidate_arms(workload: Workload) -> list[Arm]:
    """The eager arms worth timing here: bf16 only on a CPU with native bf16, channels_last only for models with
    the switch. Never a CUDA-only precision (16-mixed)."""
    precisions = ["32-true"] + (["bf16-mixed"] if cpu_has_bf16() else [])
    layouts = [False, True] if workload.has_channels_last else [False]
    return [Arm(p, c) for p in precisions for c in layouts]


class CompileModules(L.Callback):
    """``torch.compile`` every child module that has parameters, in place (``nn.Module.compile``), at setup: the
    GANs' and VAE's training steps call their sub-networks directly, not the LightningModule's forward."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for child in pl_module.children():
            if next(child.parameters(), None) is not None:
                child.compile()


class _StepClock(L.Callback):
    """Seconds of each training batch; stops the fit once ``min_steps`` timed steps and ``budget_s`` have passed."""

    def __init__(self, warmup: int, min_steps: int, budget_s: float):
        self.warmup, self.min_steps, self.budget_s = warmup, min_steps, budget_s
        self.times: list[float] = []
        self.finite = True

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self.times.append(time.perf_counter() - self.start)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not torch.isfinite(loss).all():
            self.finite = False
        timed = self.times[self.warmup:]
        if len(timed) >= self.min_steps and sum(timed) >= self.budget_s:
            trainer.should_stop = True

    def on_train_end(self, trainer, pl_module) -> None:
        values = [v for v in trainer.callback_metrics.values() if isinstance(v, torch.Tensor)]
        values += [p.detach() for p in pl_module.parameters()]
        self.finite = self.finite and all(bool(torch.isfinite(v).all()) for v in values)


@contextlib.contextmanager
def _quiet_and_seeded():
    """A probe leaves no trace: RNG states restored (the run's seed still decides its init), Lightning's messages
    and warnings about the throwaway Trainer muted."""
    py_state, np_state = random.getstate(), np.random.get_state()
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    try:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
            warnings.simplefilter("ignore")
            for lg in loggers:
                lg.setLevel(logging.ERROR)
            torch.manual_seed(0)
            yield tmp
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def measure_arm(workload: Workload, arm: Arm, batch_size: int, warmup: int = 2, min_steps: int = 3,
                budget_s: float = 1.0, max_steps: int = 50, callbacks: tuple[L.Callback, ...] = ()) -> Measurement:
    """Time ``Trainer.fit`` steps of ``workload`` under ``arm`` on the CPU (manual optimization included), from
    batch start to batch end (forward, backward, optimizer); ``callbacks`` join the Trainer's (benchmarks count
    FLOPs with one)."""
    with _quiet_and_seeded() as tmp:
        model = workload.model(arm.channels_last)
        batch = workload.batch(model, batch_size)
        clock = _StepClock(warmup, min_steps, budget_s)
        trainer = L.Trainer(accelerator="cpu", devices=1, precision=arm.precision, max_epochs=1, logger=False,
                            callbacks=[clock, *callbacks] + [CompileModules()] * arm.compile,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            limit_val_batches=0, num_sanity_val_steps=0, default_root_dir=tmp)
        trainer.fit(model, DataLoader([batch] * (warmup + max_steps), batch_size=None))
    timed = clock.times[warmup:] or clock.times
    return Measurement(statistics.median(timed), sum(clock.times[:warmup]), clock.finite)


# --------------------------------------------------------------------------------------------------- the probe
def probe(workload: Workload, *, compile: bool = False, refresh: bool = False, rounds: int = 2,
          step_budget_s: float = 0.25, arm_budget_s: float = 0.75, measure: Callable[..., Measurement] | None = None,
          log: Callable[[str], None] = lambda _: None) -> ProbeResult:
    """Measurements of every candidate arm of ``workload`` on this CPU, from the cache unless ``refresh`` (or
    ``compile`` is asked of a cache without it). Rounds rotate the arms' order, so drift falls on all of them.

    The batch is ``workload.batch_size`` unless a step would take over ``step_budget_s``: a step at 8 rows gives the
    time per row (an over-estimate: small batches amortise less), from which the batch is scaled down.
    ``measure(workload, arm, batch_size, budget_s=...)`` is injectable (tests fake the timings)."""
    measure = measure or measure_arm
    path = cache_path(workload)
    cached, note = read_cache(path, workload)
    if cached is not None and not refresh and (not compile or any(a.compile for a in cached.arms)):
        return cached
    batch_size = calibrate_batch(workload, step_budget_s, measure)
    arms = candidate_arms(workload)
    runs: dict[Arm, list[Measurement]] = {a: [] for a in arms}
    for r in range(rounds):
        for arm in arms[r % len(arms):] + arms[: r % len(arms)]:
            log(f"probe {workload.name}: {arm.name}, batch {batch_size}")
            runs[arm].append(measure(workload, arm, batch_size, budget_s=arm_budget_s))
    results = {a: Measurement(statistics.median(m.step_s for m in ms), statistics.median(m.warmup_s for m in ms),
                              all(m.finite for m in ms)) for a, ms in runs.items()}
    if compile:
        best = choose(results).arm
        arm = Arm(best.precision, best.channels_last, compile=True)
        log(f"probe {workload.name}: {arm.name}, batch {batch_size}")
        try:
            results[arm] = measure(workload, arm, batch_size, budget_s=arm_budget_s)
        except Exception as err:  # noqa: BLE001  (a model dynamo cannot compile is trained eagerly, not a crash)
            log(f"probe {workload.name}: torch.compile failed ({type(err).__name__}: {str(err).splitlines()[0]})")
    result = ProbeResult(workload.name, batch_size, results, path, note=note)
    write_cache(result, workload)
    return result


def calibrate_batch(workload: Workload, step_budget_s: float, measure: Callable[..., Measurement] | None = None) -> int:
    """``workload.batch_size``, or fewer rows where a step would take over ``step_budget_s`` (never under 8)."""
    small = min(8, workload.batch_size)
    per_row = (measure or measure_arm)(workload, FP32, small, budget_s=0.0).step_s / small
    return max(small, min(workload.batch_size, int(step_budget_s / max(per_row, 1e-9))))


def cache_path(workload: Workload) -> Path:
    from zoo.datamodules.common import cache_dir

    return cache_dir("precision", machine_key(), f"{workload.key}.json")


def read_cache(path: Path, workload: Workload) -> tuple[ProbeResult | None, str]:
    """The cached result, or None and why not (missing, damaged, another version or workload)."""
    if not path.is_file():
        return None, ""
    try:
        data = json.loads(path.read_text())
        if data["version"] != CACHE_VERSION or data["workload"] != workload.key:
            return None, f"re-measured: {path.name} was written for another version"
        arms = {Arm(**a["arm"]): Measurement(float(a["step_s"]), float(a["warmup_s"]), bool(a["finite"]))
                for a in data["arms"]}
        if not arms or any(not m.step_s > 0 for m in arms.values()):
            raise ValueError("no arms")
        return ProbeResult(data["name"], int(data["batch_size"]), arms, path, cached=True), ""
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        return None, f"re-measured: the cache file {path} was damaged ({type(err).__name__})"


def write_cache(result: ProbeResult, workload: Workload) -> None:
    from zoo.hub import write_atomic

    data = {"version": CACHE_VERSION, "workload": workload.key, "name": result.workload, "cpu": cpu_model(),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "batch_size": result.batch_size,
            "arms": [{"arm": asdict(a), **asdict(m)} for a, m in result.arms.items()]}
    write_atomic(result.path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))


# -------------------------------------------------------------------------------------------------- the choice
@dataclass
class Choice:
    arm: Arm
    speedup: float  # step-time ratio fp32 / chosen
    reason: str


def choose(arms: dict[Arm, Measurement], margin: float = MARGIN, steps: int | None = None) -> Choice:
    """The arm to train with, from measurements (pure). Each switch must earn ``margin``: channels_last over the
    same precision without it, bf16 (finite losses only) over the best fp32 arm, compile over the best eager arm
    and its compile time paid back twice within ``steps`` (unknown ``steps``: never compile)."""
    base = arms[FP32].step_s
    gain = lambda a, b: arms[b].step_s / arms[a].step_s  # how much faster a is than b

    def best_layout(precision: str) -> Arm | None:
        plain, cl = Arm(precision), Arm(precision, True)
        if plain not in arms or not arms[plain].finite:
            return None
        return cl if cl in arms and arms[cl].finite and gain(cl, plain) >= 1 + margin else plain

    pick, notes = best_layout("32-true") or FP32, []
    bf16 = best_layout("bf16-mixed")
    if Arm("bf16-mixed") not in arms:
        notes.append("bf16 not tried: no native bf16 on this CPU")
    elif bf16 is None:
        notes.append("bf16 rejected: non-finite loss")
    elif gain(bf16, pick) >= 1 + margin:
        pick = bf16
    else:
        notes.append(f"{bf16.name} {base / arms[bf16].step_s:.2f}x fp32: under {pick.name} + {margin:.0%}")
    compiled = Arm(pick.precision, pick.channels_last, compile=True)
    if compiled in arms:
        saved = arms[pick].step_s - arms[compiled].step_s
        cost = max(0.0, arms[compiled].warmup_s - arms[pick].warmup_s)
        payback = cost / saved if saved > 0 else float("inf")
        if arms[compiled].finite and gain(compiled, pick) >= 1 + margin and steps and 2 * payback <= steps:
            pick = compiled
        else:
            notes.append(f"compile {gain(compiled, pick):.2f}x, pays back after "
                         f"{payback:.0f} steps" + (f" of {steps}" if steps else " (run length unknown)"))
    return Choice(pick, base / arms[pick].step_s, "; ".join(notes))


# --------------------------------------------------------------------------------------------------- the CLI
def add_precision_option(parser) -> None:
    """``--precision auto`` (a zoo option: Lightning's ``trainer.precision`` accepts only its own values)."""
    parser.add_argument("--precision", type=Literal["auto"] | None, default=None,
                        help="auto: set trainer.precision, the model's channels_last and torch.compile from a "
                             "measurement of this model on this CPU (cached; see zoo/precision.py)")


def _say(line: str) -> None:
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank == 0:
        print(line, file=sys.stderr)


def resolve_auto_precision(cfg, log: Callable[[str], None] = _say) -> Choice | None:
    """With ``precision: auto`` in the parsed config, write the chosen precision, channels_last and compile into it
    (before the classes are built) and say in one line what was picked and why."""
    if cfg.get("precision") != "auto":
        return None
    accelerator = str(cfg.trainer.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        precision = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "16-mixed"
        cfg.trainer.precision = precision
        log(f"zoo: --precision auto -> {precision} (CUDA GPU: Lightning's mixed precision; only CPUs are measured)")
        return None
    if accelerator != "cpu" and accelerator != "auto":
        log(f"zoo: --precision auto -> unchanged (only CPUs are measured, not {accelerator})")
        return None
    workload = Workload.from_config(cfg)
    result = probe(workload)
    steps = cfg.trainer.get("max_steps")
    choice = choose(result.arms, steps=steps if steps and steps > 0 else None)
    cfg.trainer.precision = choice.arm.precision
    if workload.has_channels_last:
        cfg.model.init_args.channels_last = choice.arm.channels_last
    if choice.arm.compile:
        from jsonargparse import Namespace

        callbacks = cfg.trainer.get("callbacks") or []
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        cfg.trainer.callbacks = callbacks + [Namespace(class_path="zoo.precision.CompileModules",
                                                       init_args=Namespace())]
    where = "cached" if result.cached else "measured now"
    why = f"; {choice.reason}" if choice.reason else ""
    note = f"; {result.note}" if result.note else ""
    log(f"zoo: --precision auto -> {choice.arm.name} ({choice.speedup:.2f}x 32-true on {cpu_model()}, "
        f"{workload.name} batch {result.batch_size}{why}{note}; {where}: {result.path})")
    return choice
