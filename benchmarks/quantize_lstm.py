"""The char LSTM in dynamic int8 (LSTM and linear layers) vs fp32: test nats/char on the full Tiny Shakespeare test
split, latency of one step at batch 1, throughput of one step over 256 streams, and model size, side by side.

    ZOO_DATA_DIR=../shared/data python benchmarks/quantize_lstm.py     # writes benchmarks/quantize_lstm.json
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

import zoo
from _bench import machine
from zoo.export import quantize_dynamic_int8
from zoo.hub import _data_from_config, run_test

NAME = "char_lstm_tinyshakespeare_3min"


def step_seconds(model, batch: int, rounds: int = 50) -> float:
    """Median seconds of one recurrent step (one character per stream) at ``batch`` streams."""
    ids, state = torch.zeros(batch, 1, dtype=torch.long), None
    times = []
    with torch.no_grad():
        for _ in range(rounds + 5):
            start = time.perf_counter()
            _, state = model(ids, state)
            times.append(time.perf_counter() - start)
    return statistics.median(times[5:])


def size_mb(model) -> float:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell() / 1e6


def main() -> int:
    warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated")  # still works in torch 2.14
    fp32 = zoo.load(NAME)
    int8 = quantize_dynamic_int8(fp32)
    rows = {}
    for arm, model in (("fp32", fp32), ("int8", int8)):
        test = run_test(model, _data_from_config(fp32.zoo_card["data"]), "cpu")
        rows[arm] = {"test_nats_per_char": test["test/loss"], "step_ms_batch1": step_seconds(model, 1) * 1e3,
                     "chars_per_s_batch256": 256 / step_seconds(model, 256), "size_mb": size_mb(model)}
    print(f"{machine()}; {NAME}")
    print(f"{'arm':<6}{'test nats/char':>16}{'step ms (b1)':>14}{'chars/s (b256)':>16}{'size MB':>9}")
    for arm, r in rows.items():
        print(f"{arm:<6}{r['test_nats_per_char']:>16.4f}{r['step_ms_batch1']:>14.3f}{r['chars_per_s_batch256']:>16.0f}"
              f"{r['size_mb']:>9.2f}")
    Path(__file__).with_name("quantize_lstm.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2)
                                                              + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
