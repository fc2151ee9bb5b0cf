"""Share of hardware peak: the flagship's training FLOP/s over matrix-multiply FLOP/s measured in the same job.

    python benchmarks/share_of_peak.py [--batch-size 256] [--steps 4]

FLOPs of one training step (forward + backward) are counted with ``torch.utils.flop_counter.FlopCounterMode``;
the step is timed in a plain loop (the overhead benchmark shows the Trainer adds no measurable time at this size).
The peak is the best of several large fp32 ``torch.mm`` calls. Writes ``share_of_peak.json`` next to this file.
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

import zoo  # noqa: E402
from _bench import flagship_sgd_step, machine, timer, write_json  # noqa: E402


def matmul_flops_per_s(n: int, reps: int, device: torch.device) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(reps):
        stop = timer()
        torch.mm(a, b)
        best = min(best, stop())
    return 2 * n**3 / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="timed steps (after one warm-up step)")
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = zoo.get_model("cifar_resnet", channels_last=args.channels_last, lookahead=False).to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    sgd_step = flagship_sgd_step(model)
    step = lambda: sgd_step(x, y)  # noqa: E731

    with FlopCounterMode(display=False) as counter:
        step()
    flops_per_step = counter.get_total_flops()
    times = []
    for _ in range(args.steps):
        stop = timer()
        step()
        times.append(stop())
    step_s = sorted(times)[len(times) // 2]
    train = flops_per_step / step_s
    peak = matmul_flops_per_s(4096 if device.type == "cuda" else 2048, 5, device)
    result = {
        "batch_size": args.batch_size, "channels_last": args.channels_last,
        "flops_per_step": flops_per_step, "step_s": step_s, "images_per_s": args.batch_size / step_s,
        "train_gflops_per_s": train / 1e9, "matmul_gflops_per_s": peak / 1e9, "share_of_peak": train / peak,
    }
    print(f"\n{machine()}\n")
    print(f"flagship training step, batch {args.batch_size}: {flops_per_step / 1e9:.1f} GFLOP in {step_s:.3f} s "
          f"= {train / 1e9:.1f} GFLOP/s ({args.batch_size / step_s:.0f} img/s)")
    print(f"fp32 matrix multiply peak: {peak / 1e9:.1f} GFLOP/s")
    print(f"share of peak: {100 * train / peak:.1f} %")
    print(f"\nwrote {write_json(__file__, result)}")


if __name__ == "__main__":
    main()
