"""torch's fused optimizer kernels against the default per-tensor loop, per model family, side by side in one job.

    python benchmarks/fused_optimizer.py [--repeats 5] [--steps 20]

For each family's model (its config's optimizer: Adam for the VAE, the forecaster and the GANs' generators, AdamW
for the char LSTM, Nesterov SGD for the classifiers), ``zoo.optim.create_optimizer(..., fused=False)`` (the default
loop, the baseline) and ``fused=True`` (what the zoo builds) each take ``--steps`` optimizer steps on fixed random gradients; rounds alternate
the two. Reported: milliseconds per step and the speed-up (median, min, max over rounds), then the whole training step
of the VAE (batch 16, its config's model: forward, backward, step), where the optimizer is a large share. Writes
``fused_optimizer.json`` next to this file.
"""

from __future__ import annotations

import argparse
import time

import torch

import zoo
from _bench import alternate, machine, ratio_stats, write_json
from zoo.optim import create_optimizer

# name -> (registry kwargs as the family's config builds it, optimizer, lr)
FAMILIES = {
    "vae": ({"widths": [48, 96], "depth": 1}, "adam", 1e-3),
    "char_lstm": ({"vocab": "".join(map(chr, range(32, 97))), "embed_dim": 64, "hidden_size": 256, "num_layers": 2},
                  "adamw", 2e-3),  # lstm_tinyshakespeare_cpu.yaml's net, 65 characters
    "lstm_forecaster": ({}, "adam", 1e-3),
    "dcgan (generator)": ({}, "adam", 2e-4),
    "cifar_cnn": ({}, "sgd", 0.05),
    "cifar_resnet": ({}, "sgd", 0.2),
}


def module_of(name: str) -> torch.nn.Module:
    kwargs, *_ = FAMILIES[name]
    model = zoo.get_model(name.split(" ")[0], **kwargs)
    return model.generator if name.startswith("dcgan") else model


def optimizer_step_seconds(params: list[torch.Tensor], name: str, lr: float, fused: bool, steps: int):
    opt = create_optimizer(params, name, lr, 0.0, fused=fused)
    assert bool(opt.defaults.get("fused")) == fused

    def arm() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            opt.step()
        return (time.perf_counter() - start) / steps

    return arm


def training_step_seconds(fused: bool, steps: int):
    torch.manual_seed(0)
    model = zoo.get_model("vae", **FAMILIES["vae"][0])
    opt = create_optimizer(model.parameters(), "adam", 1e-3, 0.0, fused=fused)
    x = torch.rand(16, 1, 28, 28)

    def arm() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            loss = model.losses(x)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return (time.perf_counter() - start) / steps

    return arm


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="measured rounds per arm (after one warm-up round)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per measurement")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    args = parser.parse_args(argv)
    print(f"{machine()}\n")
    print("| family | optimizer | parameters | default loop, ms/step | fused, ms/step | speed-up (median, min-max) |")
    print("|---|---|---|---|---|---|")
    rows = []
    for family in args.families:
        _, name, lr = FAMILIES[family]
        params = [p for p in module_of(family).parameters() if p.requires_grad]
        g = torch.Generator().manual_seed(0)
        for p in params:
            p.grad = torch.randn(p.shape, generator=g)
        times = alternate({"loop": optimizer_step_seconds(params, name, lr, False, args.steps),
                           "fused": optimizer_step_seconds(params, name, lr, True, args.steps)}, args.repeats)
        speed = ratio_stats(times["loop"], times["fused"])
        n = sum(p.numel() for p in params)
        rows.append({"family": family, "optimizer": name, "parameters": n, "seconds": times, "speedup": speed})
        print(f"| {family} | {name} | {n / 1e6:.2f} M | {1e3 * min(times['loop']):.2f} | "
              f"{1e3 * min(times['fused']):.2f} | {speed['median']:.2f}x ({speed['min']:.2f}-{speed['max']:.2f}) |")
    times = alternate({"loop": training_step_seconds(False, args.steps), "fused": training_step_seconds(True, args.steps)},
                      args.repeats)
    speed = ratio_stats(times["loop"], times["fused"])
    print(f"\nVAE training step (batch 16): {1e3 * min(times['loop']):.1f} ms with the loop, "
          f"{1e3 * min(times['fused']):.1f} ms fused: {speed['median']:.2f}x ({speed['min']:.2f}-{speed['max']:.2f})")
    path = write_json(__file__, {"config": vars(args), "optimizer_step": rows,
                                 "vae_training_step": {"seconds": times, "speedup": speed}})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
