"""Start-up time of CIFAR10DataModule.setup(): first run (decode every image) vs cached run (load the uint8 cache).

    ZOO_DATA_DIR=../shared/data python benchmarks/datamodule_startup.py

Uses a fresh temporary cache, so it measures a true first run; prints a table and writes JSON next to this file.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path


def timed_setup() -> float:
    from zoo.datamodules.cifar import CIFAR10DataModule

    start = time.perf_counter()
    dm = CIFAR10DataModule()
    dm.setup("fit")
    elapsed = time.perf_counter() - start
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 50000
    return elapsed


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["ZOO_CACHE"] = cache
        first = timed_setup()
        cached = [timed_setup() for _ in range(3)]
    result = {
        "first_run_s": round(first, 2),
        "cached_run_s": round(min(cached), 2),
        "speedup": round(first / min(cached), 1),
        "data_dir": os.environ.get("ZOO_DATA_DIR", "data"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
    }
    print(f"{'first run (decode)':<22}{result['first_run_s']:>8.2f} s")
    print(f"{'cached run (best of 3)':<22}{result['cached_run_s']:>8.2f} s")
    print(f"{'speed-up':<22}{result['speedup']:>8.1f} x")
    Path(__file__).with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
