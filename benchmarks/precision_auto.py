"""What ``--precision auto`` measures and picks, per model family, on this machine (issue 26).

    python benchmarks/precision_auto.py                      # every family, 3 rounds, torch.compile arms too
    python benchmarks/precision_auto.py --families flagship "char LSTM" --no-compile
    python benchmarks/precision_auto.py --quick              # seconds: proves the script runs, numbers meaningless

Each family is its config's training step (``configs/<name>.yaml``, model and batch as ``zoo fit`` builds them; the
batch is made smaller where one fp32 step would take over ``--step-budget`` seconds). Arms: ``32-true`` and, on a CPU
with native bf16, ``bf16-mixed``, each with and without channels_last where the model has the switch; then
``torch.compile`` of the best eager arm. Rounds alternate the arms' order. The table gives the fp32 step time, every
arm's speed-up over it and the pick of :func:`zoo.precision.choose` (compile only if it pays back twice within the
config's ``max_steps``). The measurements replace this machine's ``--precision auto`` cache, so ``zoo fit`` then uses
them. Writes ``precision_auto.json`` next to this file (not with ``--quick``).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import sys
import tempfile
from pathlib import Path

import yaml
from _bench import machine, write_json

from zoo import precision
from zoo.precision import Arm, Workload, choose, measure_arm, probe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FAMILIES = {  # label -> config and CLI overrides
    "classic CNN": ("cifar_cnn",),
    "flagship": ("cifar_resnet",),
    "EfficientNet frozen": ("efficientnet_hymenoptera", "--model.init_args.unfreeze_at_epoch", "null"),
    "EfficientNet unfrozen": ("efficientnet_hymenoptera",),
    "DCGAN": ("dcgan_fashion_mnist",),
    "VAE": ("vae_mnist",),
    "pix2pix": ("pix2pix_cifar_colorize",),
    "char LSTM": ("lstm_tinyshakespeare_cpu",),
    "forecaster": ("lstm_airline",),
}
COLUMNS = [Arm("32-true", True), Arm("bf16-mixed"), Arm("bf16-mixed", True)]


def resolved_config(config: str, *overrides: str) -> dict:
    """The whole config ``zoo fit --config configs/<config>.yaml ...`` would run (``--print_config``), as a dict."""
    from zoo.lightning_cli import ZooCLI

    out, argv = io.StringIO(), sys.argv
    sys.argv = argv[:1]  # this script's own options are not the CLI's
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            ZooCLI(args=["--config", str(CONFIGS / f"{config}.yaml"), *overrides, "--print_config"], run=False)
    finally:
        sys.argv = argv
    return yaml.safe_load(out.getvalue())


def family_workload(label: str) -> tuple[Workload, int | None]:
    """The family's workload (the one ``--precision auto`` probes for its config) and the config's max_steps."""
    cfg = resolved_config(*FAMILIES[label])
    steps = (cfg.get("trainer") or {}).get("max_steps")
    return Workload.from_config(cfg), steps if steps and steps > 0 else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--step-budget", type=float, default=1.0, help="seconds one fp32 step may take")
    parser.add_argument("--arm-budget", type=float, default=2.0, help="timed seconds per arm and round")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny budgets, no compile, nothing kept")
    args = parser.parse_args()
    measure = measure_arm
    if args.quick:
        args.rounds, args.step_budget, args.arm_budget, args.compile = 1, 0.02, 0.0, False
        measure = functools.partial(measure_arm, warmup=1, min_steps=1)
        scratch = tempfile.TemporaryDirectory(prefix="zoo-precision-quick-")  # removed when main() returns
        os.environ["ZOO_CACHE"] = scratch.name  # keep the real cache clean

    rows = {}
    for label in args.families:
        workload, steps = family_workload(label)
        result = probe(workload, compile=args.compile, refresh=True, rounds=args.rounds,
                       step_budget_s=args.step_budget, arm_budget_s=args.arm_budget, measure=measure, log=print)
        choice = choose(result.arms, steps=steps)
        base = result.arms[precision.FP32].step_s
        compiled = next((a for a in result.arms if a.compile), None)
        rows[label] = {
            "workload": workload.name, "batch_size": result.batch_size, "config_batch_size": workload.batch_size,
            "max_steps": steps, "fp32_step_s": base,
            "arms": {a.name: {"step_s": m.step_s, "warmup_s": m.warmup_s, "finite": m.finite,
                              "speedup": base / m.step_s} for a, m in result.arms.items()},
            "compiled_arm": compiled.name if compiled else None,
            "pick": choice.arm.name, "pick_speedup": choice.speedup, "reason": choice.reason,
        }

    bf16 = sorted(precision.BF16_FLAGS & precision.cpu_flags())
    print(f"\n{machine()}\nCPU model: {precision.cpu_model()}; native bf16: {', '.join(bf16) or 'no'}\n")
    head = f"{'family':<22}{'batch':>6}{'fp32 ms':>9}" + "".join(f"{a.name:>26}" for a in COLUMNS)
    print(head + f"{'compile':>9}  auto picks")
    for label, r in rows.items():
        cells = [r["arms"].get(a.name) for a in COLUMNS]
        ratios = "".join(f"{c['speedup']:>25.2f}x" if c else f"{'-':>26}" for c in cells)
        comp = r["arms"][r["compiled_arm"]]["speedup"] if r["compiled_arm"] else None
        comp = f"{comp:>8.2f}x" if comp else f"{'-':>9}"
        why = f"  ({r['reason']})" if r["reason"] else ""
        print(f"{label:<22}{r['batch_size']:>6}{1e3 * r['fp32_step_s']:>9.1f}{ratios}{comp}  "
              f"{r['pick']} {r['pick_speedup']:.2f}x{why}")
    print("\nspeed-ups: fp32 step time / arm step time (median of rounds); compile: of the best eager arm")
    if args.quick:
        print("--quick: nothing written")
        return
    result = {"cpu_model": precision.cpu_model(), "cpu_bf16_flags": bf16, "rounds": args.rounds,
              "step_budget_s": args.step_budget, "arm_budget_s": args.arm_budget, "families": rows}
    print(f"wrote {write_json(__file__, result)}")


if __name__ == "__main__":
    main()
