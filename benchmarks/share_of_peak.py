"""Share of hardware peak for every model family: training FLOP/s over the matrix-multiply FLOP/s measured in the same
job, and what bounds each step (issue 26).

    python benchmarks/share_of_peak.py                 # every family, fp32 (and bf16 where the CPU has it)
    python benchmarks/share_of_peak.py --families flagship VAE --precisions 32-true
    python benchmarks/share_of_peak.py --quick         # seconds: proves the script runs, numbers meaningless

Families are the configs' training steps as ``zoo fit`` builds them (benchmarks/precision_auto.py's list; the batch
is made smaller where one fp32 step would take over ``--step-budget`` s), each under ``Trainer.fit`` on an in-memory
batch. FLOPs of one training step (forward, backward; optimizer updates count none) are counted with
``torch.utils.flop_counter.FlopCounterMode`` on a warm-up step (plus oneDNN's LSTM kernel, which it does not know,
and grouped convolutions' backward, which it over-counts); later steps are timed. The machine, measured in the same
run: matmul peak (best of several large ``torch.mm``, fp32 and bf16) and copy bandwidth (a 256 MB ``copy_``).

What bounds a step: the largest of three estimates of its time, each shown as a share of the measured step time:
  compute  = FLOPs / matmul peak of the step's precision (what the step would take if every FLOP ran at peak);
  memory   = bytes every data-moving op reads and writes / copy bandwidth (cache reuse ignored: an upper estimate);
  overhead = the same step at 2 rows (Python, Lightning, op dispatch and launch: the per-step cost that does not
             shrink with the batch; it holds 2 rows' work too, so it is an upper estimate).
The flagship's hand-written training step at batch 256 (the number docs/results.md quotes) is kept at the top of
the JSON. Writes ``share_of_peak.json`` next to this file (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import tempfile

import lightning as L
import torch
from _bench import flagship_sgd_step, machine, timer, write_json
from precision_auto import FAMILIES, family_workload
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count

import zoo
from zoo import precision
from zoo.precision import Arm, calibrate_batch, measure_arm

aten = torch.ops.aten
NO_DATA = {"detach", "view", "_unsafe_view", "t", "transpose", "permute", "expand", "select", "slice", "as_strided",
           "alias", "unsqueeze", "squeeze", "reshape", "_reshape_alias", "empty", "empty_like", "lift_fresh"}


# ------------------------------------------------------------------------------------------------ the machine
def matmul_flops_per_s(n: int, reps: int, device: torch.device, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        stop = timer()
        torch.mm(a, b)
        best = min(best, stop())
    return 2 * n**3 / best


def copy_bytes_per_s(megabytes: int, reps: int) -> float:
    src = torch.randn(megabytes * 2**18)  # 4-byte floats
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = min(_timed(lambda: dst.copy_(src)) for _ in range(reps))
    return 2 * src.nbytes / best  # read + write


def _timed(fn) -> float:
    stop = timer()
    fn()
    return stop()


# ---------------------------------------------------------------------------------------------- counting a step
def _lstm_flops(input_shape, w_ih, w_hh, *args, **kwargs) -> int:
    """oneDNN's fused LSTM layer (aten.mkldnn_rnn_layer), which FlopCounterMode has no formula for: a (G*H, I) and
    a (G*H, H) matrix product per time step and sequence."""
    return 2 * input_shape[0] * input_shape[1] * (math.prod(w_ih) + math.prod(w_hh))


def _lstm_backward_flops(input_shape, w_ih, w_hh, *args, **kwargs) -> int:
    return 2 * _lstm_flops(input_shape, w_ih, w_hh)  # gradients of the inputs and of the weights


def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """Each of grad_input and grad_weight costs what the forward convolution does. torch's own formula counts a
    grouped (depthwise) convolution's grad_weight ``groups`` times over (EfficientNet: 40x its forward; fixed upstream
    by pytorch/pytorch#183405, not in every installed torch)."""
    return conv_flop_count(x_shape, w_shape, grad_out_shape, transposed) * (bool(output_mask[0]) + bool(output_mask[1]))


FLOP_FORMULAS = {aten.mkldnn_rnn_layer: _lstm_flops, aten.mkldnn_rnn_layer_backward: _lstm_backward_flops,
                 aten.convolution_backward: _conv_backward_flops}


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _tensors(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _tensors(v)


class OpCounter(TorchDispatchMode):
    """Ops dispatched (below autograd: the kernels that run) and bytes their tensors hold, inputs plus outputs."""

    def __init__(self):
        super().__init__()
        self.ops, self.bytes = 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        if func._overloadpacket.__name__ not in NO_DATA:
            self.bytes += sum(t.numel() * t.element_size() for t in _tensors((args, kwargs, out)))
        return out


class CountStep(L.Callback):
    """FLOPs, ops and bytes of training batch ``at`` (a warm-up step, so counting never slows a timed one)."""

    def __init__(self, at: int = 1):
        self.at, self.modes = at, []
        self.flops, self.ops, self.bytes = 0, 0, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if batch_idx == self.at:
            self.modes = [FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS), OpCounter()]
            for mode in self.modes:
                mode.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if batch_idx == self.at:
            for mode in reversed(self.modes):
                mode.__exit__(None, None, None)
            flops, ops = self.modes
            self.flops, self.ops, self.bytes = flops.get_total_flops(), ops.ops, ops.bytes


def bound(step_s: float, compute_s: float, memory_s: float, overhead_s: float) -> dict:
    """The three estimates as shares of the step time; the largest names the bound."""
    shares = {"compute": compute_s / step_s, "memory": memory_s / step_s, "overhead": overhead_s / step_s}
    return {"bound": max(shares, key=shares.get), **{f"{k}_share": v for k, v in shares.items()}}


# ---------------------------------------------------------------------------------------------------- the runs
def flagship_hand_step(batch_size: int, steps: int, peak: float) -> dict:
    """The flagship's plain training step (no Trainer) at ``batch_size``, channels_last: the quoted number."""
    model = zoo.get_model("cifar_resnet", channels_last=True, lookahead=False)
    model.to(memory_format=torch.channels_last)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    sgd_step = flagship_sgd_step(model)
    with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
        sgd_step(x, y)
    flops = counter.get_total_flops()
    step_s = sorted(_timed(lambda: sgd_step(x, y)) for _ in range(steps))[steps // 2]
    train = flops / step_s
    return {"batch_size": batch_size, "channels_last": True, "flops_per_step": flops, "step_s": step_s,
            "images_per_s": batch_size / step_s, "train_gflops_per_s": train / 1e9,
            "matmul_gflops_per_s": peak / 1e9, "share_of_peak": train / peak}


def family_row(workload, batch: int, precision_: str, peaks: dict, bandwidth: float, args, measure) -> dict:
    arm = Arm(precision_, bool(workload.init_args.get("channels_last")))  # the layout the config trains in
    counter = CountStep(at=1)
    m = measure(workload, arm, batch, budget_s=args.arm_budget, callbacks=(counter,))
    fixed = measure(workload, arm, 2, budget_s=args.arm_budget / 4).step_s
    achieved = counter.flops / m.step_s
    peak = peaks[arm.precision]
    return {"workload": workload.name, "precision": arm.precision, "channels_last": arm.channels_last,
            "batch_size": batch, "flops_per_step": counter.flops, "ops_per_step": counter.ops,
            "bytes_per_step": counter.bytes, "step_s": m.step_s, "gflops_per_s": achieved / 1e9,
            "share_of_peak": achieved / peak,
            "step_s_at_2_rows": fixed, **bound(m.step_s, counter.flops / peak, counter.bytes / bandwidth, fixed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--precisions", nargs="*", default=None, choices=["32-true", "bf16-mixed"],
                        help="default: 32-true, and bf16-mixed on a CPU with native bf16")
    parser.add_argument("--step-budget", type=float, default=1.0, help="seconds one fp32 step may take")
    parser.add_argument("--arm-budget", type=float, default=4.0, help="timed seconds per family and precision")
    parser.add_argument("--batch-size", type=int, default=256, help="the flagship's hand-written step")
    parser.add_argument("--steps", type=int, default=4, help="timed steps of the flagship's hand-written step")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny sizes, nothing written")
    args = parser.parse_args()
    measure, n, reps, mb = measure_arm, 2048, 5, 256
    if args.quick:
        args.step_budget, args.arm_budget, args.batch_size, args.steps = 0.02, 0.0, 16, 1
        measure, n, reps, mb = functools.partial(measure_arm, warmup=2, min_steps=1), 512, 2, 16
        scratch = tempfile.TemporaryDirectory(prefix="zoo-share-quick-")  # removed when main() returns
        os.environ["ZOO_CACHE"] = scratch.name
    if args.precisions is None:
        args.precisions = ["32-true"] + ["bf16-mixed"] * precision.cpu_has_bf16()
    device = torch.device("cpu")

    peaks = {"32-true": matmul_flops_per_s(n, reps, device)}
    if "bf16-mixed" in args.precisions:
        peaks["bf16-mixed"] = matmul_flops_per_s(n, reps, device, torch.bfloat16)
    bandwidth = copy_bytes_per_s(mb, reps)
    flagship = flagship_hand_step(args.batch_size, args.steps, peaks["32-true"])
    rows = {}
    for label in args.families:
        workload, _ = family_workload(label)
        batch = calibrate_batch(workload, args.step_budget, measure)  # one batch for all precisions
        for p in args.precisions:
            rows[f"{label} {p}"] = family_row(workload, batch, p, peaks, bandwidth, args, measure)

    print(f"\n{machine()}\nCPU model: {precision.cpu_model()}")
    print("matmul peak: " + ", ".join(f"{p} {v / 1e9:.1f} GFLOP/s" for p, v in peaks.items())
          + f"; copy {bandwidth / 1e9:.1f} GB/s\n")
    print(f"{'family':<22}{'precision':>11}{'batch':>6}{'GFLOP/step':>11}{'step ms':>9}{'GFLOP/s':>9}"
          f"{'of peak':>8}  {'bound':<9}{'compute':>8}{'memory':>8}{'overhead':>9}")
    for name, r in rows.items():
        label = name.rsplit(" ", 1)[0]
        print(f"{label:<22}{r['precision']:>11}{r['batch_size']:>6}{r['flops_per_step'] / 1e9:>11.3f}"
              f"{1e3 * r['step_s']:>9.1f}{r['gflops_per_s']:>9.1f}{100 * r['share_of_peak']:>7.1f}%  "
              f"{r['bound']:<9}{100 * r['compute_share']:>7.0f}%{100 * r['memory_share']:>7.0f}%"
              f"{100 * r['overhead_share']:>8.0f}%")
    print("compute / memory / overhead: FLOPs at matmul peak, bytes at copy bandwidth, the step at 2 rows, "
          "each as a share of the measured step time; the largest is the bound")
    print(f"\nflagship, hand-written step, batch {flagship['batch_size']}: "
          f"{flagship['flops_per_step'] / 1e9:.1f} GFLOP "
          f"in {flagship['step_s']:.3f} s = {flagship['train_gflops_per_s']:.1f} GFLOP/s "
          f"({flagship['images_per_s']:.0f} img/s), {100 * flagship['share_of_peak']:.1f} % of the fp32 matmul peak")
    if args.quick:
        print("--quick: nothing written")
        return
    result = {**flagship, "cpu_model": precision.cpu_model(),
              "peaks_gflops_per_s": {p: v / 1e9 for p, v in peaks.items()}, "copy_gb_per_s": bandwidth / 1e9,
              "families": rows}
    print(f"wrote {write_json(__file__, result)}")


if __name__ == "__main__":
    main()
