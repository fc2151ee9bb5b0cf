"""A newcomer's first commands, run as they would type them: command, exit code, wall time.

    ZOO_DATA_DIR=../shared/data python benchmarks/newcomer.py             # in this checkout (its .venv/bin/zoo)
    ZOO_DATA_DIR=../shared/data python benchmarks/newcomer.py --repo /tmp/fresh-clone

Runs, from a scratch folder: `zoo`, `zoo --help`, `zoo list`, every config with `--trainer.max_steps 3`,
`zoo predict` for each family (from the published weights or the 3-step run's last.ckpt) and `torch.hub.load` of two
published checkpoints. Prints a markdown table and writes benchmarks/newcomer.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def commands(repo: Path) -> list[str]:
    zoo = str(repo / ".venv" / "bin" / "zoo")
    py = str(repo / ".venv" / "bin" / "python")
    cfg = lambda name: str(repo / "configs" / f"{name}.yaml")  # noqa: E731
    last = lambda name: f"runs/{name}/version_0/checkpoints/last.ckpt"  # noqa: E731
    out = [f"{zoo}", f"{zoo} --help", f"{zoo} list"]
    out += [f"{zoo} fit --config {c} --trainer.max_steps 3" for c in sorted(str(p) for p in (repo / "configs").glob("*.yaml"))]
    out += [
        f"{zoo} predict --config {cfg('cifar_cnn')} --model.init_from cifar_cnn_cifar10",
        f"{zoo} predict --config {cfg('efficientnet_hymenoptera')} --model.init_from efficientnet_lite0_hymenoptera",
        f"{zoo} predict --config {cfg('pix2pix_cifar_edges')} --ckpt_path {last('pix2pix_cifar_edges')}",
        f"{zoo} predict --config {cfg('dcgan_fashion_mnist')} --ckpt_path {last('dcgan_fashion_mnist')}",
        f"{zoo} predict --config {cfg('vae_mnist')} --ckpt_path {last('vae_mnist')}",
        f"{zoo} predict --config {cfg('lstm_tinyshakespeare_cpu')} --ckpt_path {last('lstm_tinyshakespeare_cpu')}",
        f"{zoo} predict --config {cfg('lstm_airline')} --ckpt_path {last('lstm_airline')}",
        f"{py} -c \"import torch; m = torch.hub.load('{repo}', 'cifar_resnet_cifar10', source='local'); "
        "print(m.zoo_card['metrics'])\"",
        f"{py} -c \"import torch; m = torch.hub.load('{repo}', 'char_lstm_tinyshakespeare_3min', source='local'); "
        "print(m.generate('ROMEO:', 40, seed=0))\"",
    ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("newcomer.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for cmd in commands(args.repo.resolve()):
            start = time.perf_counter()
            run = subprocess.run(shlex.split(cmd), cwd=scratch, capture_output=True, text=True, timeout=1200)
            wall = time.perf_counter() - start
            shown = cmd.replace(str(args.repo.resolve()) + "/", "").replace(".venv/bin/", "")
            last_line = (run.stdout.strip().splitlines() or run.stderr.strip().splitlines() or [""])[-1][:90]
            rows.append({"command": shown, "exit": run.returncode, "wall_s": round(wall, 1), "last_line": last_line})
            print(f"| `{shown}` | {run.returncode} | {wall:.1f} s | {last_line} |", flush=True)
    args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["exit"] in (0, 2) if r["command"] == "zoo" else r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
