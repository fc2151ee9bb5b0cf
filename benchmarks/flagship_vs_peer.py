"""The flagship against its peer, side by side: airbench94 (KellerJordan/cifar10-airbench, legacy/airbench94.py)
and the zoo's `configs/cifar_resnet_full.yaml`, both 476 steps of 1024 on the same 50k CIFAR-10 JPEGs, both fp32 on
the same CPU. Prints the per-epoch test accuracy of both, writes ``flagship_vs_peer.json`` next to this file and draws
``docs/images/flagship_vs_peer.svg``.

    # the zoo's run (about 30 min on 2 cores; its checkpoints hold each epoch's weights)
    ZOO_DATA_DIR=../shared/data zoo fit --config configs/cifar_resnet_full.yaml --trainer.default_root_dir runs/full
    # the peer's run: its legacy/airbench94.py ported to the CPU (not part of this repository; see docs/results.md)
    python airbench94_cpu.py > peer.log
    ZOO_DATA_DIR=../shared/data python benchmarks/flagship_vs_peer.py runs/full/cifar_resnet_full/version_0 peer.log

The zoo's curve is scored here from the weights saved after each epoch (48 steps; the last after step 476), on the
official 10k test images without test-time augmentation, as the peer scores itself after each epoch; the last row
also with each one's flip + translate TTA. The peer's numbers are read from the table its script prints.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _bench import machine, test_accuracy, write_json  # noqa: E402
from plots import IMAGES, svg_lines  # noqa: E402

import zoo  # noqa: E402
from zoo.datamodules.cifar import CIFAR10DataModule  # noqa: E402

STEPS_PER_EPOCH = 48  # 50,000 // 1024, the last partial batch dropped (as both do)
# The run issue 25 quotes: the same port on a 2-core Sapphire Rapids machine (its epochs 1-10; TTA after the last).
PEER_SPR = [0.6509, 0.6814, 0.7149, 0.7235, 0.7990, 0.8113, 0.8492, 0.8675, 0.8884, 0.9019]
PEER_SPR_TTA = 0.9085


def peer_curve(log: Path) -> tuple[list[float], float]:
    """Per-epoch ``val_acc`` (the peer scores the test set) and the final ``tta_val_acc`` from airbench's table."""
    accs, tta = [], None
    for line in log.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 7 or not re.fullmatch(r"\d+|eval", cells[1]):
            continue
        if cells[1] == "eval":
            tta = float(cells[5])
        else:
            accs.append(float(cells[4]))
    if not accs or tta is None:
        raise SystemExit(f"{log}: no finished airbench94 table in it (the run must reach its 'eval' row)")
    return accs, tta


def zoo_curve(run: Path, dm: CIFAR10DataModule) -> tuple[list[float], float, list[str]]:
    ckpts = run / "checkpoints"
    by_step = {int(m.group(1)): p for p in ckpts.glob("step*.ckpt") if (m := re.fullmatch(r"step(\d+)", p.stem))}
    names = [by_step[s] for s in sorted(by_step) if s % STEPS_PER_EPOCH == 0] + [ckpts / "last.ckpt"]
    if not names[-1].is_file() or len(names) < 2:
        raise SystemExit(f"{ckpts}: expected step48.ckpt ... and last.ckpt from `zoo fit --config "
                         "configs/cifar_resnet_full.yaml`")
    accs = []
    for path in names:
        net = zoo.load(path)
        accs.append(test_accuracy(net, dm, 0))
        print(f"zoo {path.name}: test accuracy {accs[-1]:.4f}", flush=True)
    return accs, test_accuracy(net, dm, 2), [p.name for p in names]  # the last net: the final weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", type=Path, help="the zoo run's version folder (holds checkpoints/)")
    parser.add_argument("peer_log", type=Path, help="what the CPU port of airbench94.py printed")
    parser.add_argument("--data-dir", help="CIFAR-10 folder (default: $ZOO_DATA_DIR, else ./data)")
    args = parser.parse_args(argv)
    if not args.peer_log.is_file():
        raise SystemExit(f"{args.peer_log}: no such file; save what the airbench94 port prints (python ... > peer.log)")

    dm = CIFAR10DataModule(data_dir=args.data_dir, val_size=0, batch_size=1000)
    dm.setup("test")
    peer, peer_tta = peer_curve(args.peer_log)
    ours, ours_tta, files = zoo_curve(args.run, dm)
    if len(peer) != len(ours):
        raise SystemExit(f"the peer has {len(peer)} epochs and the zoo {len(ours)}; both should run 476 steps")

    steps = [min(STEPS_PER_EPOCH * (e + 1), 476) for e in range(len(ours))]
    print(f"\n{machine()}\n")
    print("| epoch | steps | peer (airbench94, CPU port) | zoo flagship | zoo - peer |")
    print("|---|---|---|---|---|")
    for e, (s, p, z) in enumerate(zip(steps, peer, ours), 1):
        print(f"| {e} | {s} | {100 * p:.2f} % | {100 * z:.2f} % | {100 * (z - p):+.2f} pt |")
    print(f"| TTA (flip + translate) | 476 | {100 * peer_tta:.2f} % | {100 * ours_tta:.2f} % | "
          f"{100 * (ours_tta - peer_tta):+.2f} pt |")

    series = {"zoo flagship (this CPU)": list(zip(range(1, len(ours) + 1), ours)),
              "airbench94 port (this CPU)": list(zip(range(1, len(peer) + 1), peer)),
              "airbench94 port (issue 25, SPR)": list(zip(range(1, len(PEER_SPR) + 1), PEER_SPR))}
    IMAGES.mkdir(parents=True, exist_ok=True)
    (IMAGES / "flagship_vs_peer.svg").write_text(svg_lines(
        series, "CIFAR-10 JPEG test accuracy after each epoch, 476 steps, fp32, no TTA", "epoch (48 steps)",
        "test accuracy"))
    out = write_json(__file__, {"steps": steps, "zoo": ours, "zoo_tta": ours_tta, "zoo_checkpoints": files,
                                "peer": peer, "peer_tta": peer_tta, "peer_spr_issue25": PEER_SPR,
                                "peer_spr_issue25_tta": PEER_SPR_TTA})
    print(f"\nwrote {out} and {IMAGES / 'flagship_vs_peer.svg'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
