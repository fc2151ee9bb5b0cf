"""Start-up time of the ``zoo`` command against its yardsticks, as paired ratios (medians of alternated runs).

    python benchmarks/startup.py                     # this checkout, 9 rounds
    python benchmarks/startup.py --cwd /tmp/old-zoo  # another checkout (run as `python -m zoo` from its folder)

Pairs (target from the newcomer issue): ``zoo --help`` vs ``python -c "import torch"`` (<= 1.5x); ``zoo list`` and
``python -c "import zoo"`` vs ``python -c "import lightning"`` (<= 1.2x). The zoo runs as ``python -m zoo`` from
``--cwd`` so that an older checkout (whose packages were top-level) can be measured the same way. Writes
benchmarks/startup.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _bench import machine

PY = sys.executable
PAIRS = {
    "zoo --help / import torch": ([PY, "-m", "zoo", "--help"], [PY, "-c", "import torch"], 1.5),
    "zoo list / import lightning": ([PY, "-m", "zoo", "list"], [PY, "-c", "import lightning"], 1.2),
    "import zoo / import lightning": ([PY, "-c", "import zoo"], [PY, "-c", "import lightning"], 1.2),
}


def wall(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--cwd", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("startup.json"))
    args = parser.parse_args()
    rows = {}
    print(f"{machine()}; {args.rounds} alternated rounds after one warm-up; zoo from {args.cwd}")
    print(f"{'pair':<32}{'zoo s':>8}{'base s':>8}{'ratio':>8}{'min-max':>14}{'target':>8}")
    for name, (cmd, base, target) in PAIRS.items():
        wall(cmd, args.cwd), wall(base, args.cwd)  # warm the file cache
        a, b = [], []
        for _ in range(args.rounds):
            a.append(wall(cmd, args.cwd))
            b.append(wall(base, args.cwd))
        ratios = sorted(x / y for x, y in zip(a, b))
        rows[name] = {"zoo_s": statistics.median(a), "base_s": statistics.median(b),
                      "ratio": statistics.median(ratios), "min": ratios[0], "max": ratios[-1], "target": target}
        r = rows[name]
        print(f"{name:<32}{r['zoo_s']:>8.2f}{r['base_s']:>8.2f}{r['ratio']:>8.2f}"
              f"{r['min']:>7.2f}-{r['max']:<6.2f}{target:>8.1f}")
    result = {"machine": machine(), "cwd": str(args.cwd), "rounds": args.rounds, "pairs": rows}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
