"""Loopback load test of `zoo serve` (issue #23): the flagship classifier over HTTP, with and without dynamic batching,
next to a plain PyTorch loop doing the same work on the same batches.

    ZOO_DATA_DIR=../shared/data python benchmarks/serve_load.py [--requests 64] [--levels 1 8 32] [--threads 1]

Three servers run in subprocesses on 127.0.0.1 (free ports), uvicorn without access logs: ``build_app`` with its
defaults (``max_batch=32``, ``max_wait_ms=0``), with ``max_wait_ms=5``, and with ``max_batch=1`` (no batching). At each concurrency level, that many client tasks (httpx,
this process) keep one request each in flight until ``--requests`` requests are answered (after a discarded warm-up of
8); each request is one CIFAR-10 test JPEG (random JPEGs when the data is absent). Reported: requests/s, client-side
p50/p99 latency, the mean batch the server formed (each response says its batch size), and the ratio of the server's
throughput to a plain loop that decodes, prepares (the server's own ``prepare``) and classifies (``predict_step``,
the card's TTA) the same images in batches of exactly the sizes the server formed (median of 3 runs). Every request
is bounded in time; the servers are stopped at the end. Prints the table and writes ``serve_load.json`` here.

Servers and loop use ``--threads`` torch threads (default 1): on a 2-core machine shared with other jobs, two OpenMP
threads per forward pass wait on each other whenever a core is taken, and 1 % of batch-1 passes then take ~0.7 s
instead of ~25 ms; one thread is slower in the median but steady, which is what a comparison needs.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from _bench import machine, write_json
from PIL import Image

NAME = "cifar_resnet_cifar10"
# batched: zoo serve's defaults (no wait: a batch is what queued while the previous one ran); batched_5ms: each
# batch also waits up to 5 ms after its first request; unbatched: one request per forward pass.
MODES = {"batched": {"max_batch": 32, "max_wait_ms": 0.0}, "batched_5ms": {"max_batch": 32, "max_wait_ms": 5.0},
         "unbatched": {"max_batch": 1}}
SERVER = """
import sys, torch, uvicorn
from zoo.serve import build_app
torch.set_num_threads(int(sys.argv[4]))
app = build_app([sys.argv[1]], **eval(sys.argv[3]))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False, ws="none")
"""


def images(n: int) -> list[bytes]:
    """``n`` CIFAR-10 test JPEGs, classes in turn; random 32-px JPEGs when ``$ZOO_DATA_DIR`` has none."""
    root = Path(os.environ.get("ZOO_DATA_DIR", "data")) / "cifar10-jpg" / "test"
    if root.is_dir():
        classes = sorted(p for p in root.iterdir() if p.is_dir())
        files = [sorted(c.iterdir())[i // len(classes)] for i, c in zip(range(n), classes * n)]
        return [f.read_bytes() for f in files]
    print(f"no CIFAR-10 JPEGs under {root}: sending random images")
    rng, out = np.random.default_rng(0), []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, format="JPEG")
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(mode: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SERVER, NAME, str(port), repr(MODES[mode]), str(threads)])
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"the {mode} server did not start")


async def load(url: str, bodies: list[bytes], concurrency: int) -> dict:
    """Closed loop: ``concurrency`` clients, each sending its next request when the last is answered."""
    import httpx

    latencies, batch_sizes, queue = [], [], list(range(len(bodies)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker():
            while queue:
                body = bodies[queue.pop()]
                start = time.perf_counter()
                r = await client.post(f"/v1/models/{NAME}/predict?k=1", content=body)
                r.raise_for_status()
                latencies.append(time.perf_counter() - start)
                batch_sizes.append(r.json()["batch_size"])

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1e3
    return {"requests_per_s": len(bodies) / wall, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "mean_batch": float(np.mean(batch_sizes)),
            "batches": batches_formed(batch_sizes)}


def batches_formed(sizes: list[int]) -> list[int]:
    """The server's batches, from each response's batch size (a batch of b answers b requests)."""
    return [b for b, count in sorted(Counter(sizes).items()) for _ in range(round(count / b))]


def plain_loop(model, prepare, bodies: list[bytes], batches: list[int]) -> float:
    """Images/s of decode + prepare + predict_step over ``bodies`` cut into ``batches`` (the server's sizes)."""
    from zoo.serve import open_image

    start, i = time.perf_counter(), 0
    with torch.inference_mode():
        for b in batches:
            x = torch.stack([prepare(open_image(body)) for body in bodies[i : i + b]])
            model.predict_step(x, 0)
            i += b
    return i / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=64, help="measured requests per level and mode")
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each server and of the loop")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from zoo.serve import build_app

    served = build_app([NAME]).state.models[NAME]  # the same model and preprocessing, in this process
    bodies = images(args.requests + 8)
    warmup, bodies = bodies[:8], bodies[8:]
    servers = {mode: start_server(mode, args.threads) for mode in MODES}
    rows = []
    try:
        for level in args.levels:
            for mode, (_, url) in servers.items():
                asyncio.run(load(url, warmup, min(level, len(warmup))))
                row = {"concurrency": level, "mode": mode, **asyncio.run(load(url, bodies, level))}
                batches = row.pop("batches")
                row["loop_images_per_s"] = statistics.median(
                    plain_loop(served.model, served.prepare, bodies, batches) for _ in range(3))
                row["server_over_loop"] = row["requests_per_s"] / row["loop_images_per_s"]
                rows.append(row)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)

    print(f"\n{NAME}, {args.requests} requests per row, loopback HTTP, {args.threads} torch thread(s) per process; "
          f"{machine()}")
    print(f"{'conc':>4}  {'mode':<11} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'batch':>6} {'loop img/s':>10} "
          f"{'server/loop':>11}")
    for r in rows:
        print(f"{r['concurrency']:>4}  {r['mode']:<11} {r['requests_per_s']:>7.1f} {r['p50_ms']:>8.1f} "
              f"{r['p99_ms']:>8.1f} {r['mean_batch']:>6.1f} {r['loop_images_per_s']:>10.1f} "
              f"{r['server_over_loop']:>11.2f}")
    result = {"model": NAME, "requests": args.requests, "threads": args.threads, "modes": MODES, "rows": rows}
    print(f"\nwrote {write_json(__file__, result)}")


if __name__ == "__main__":
    main()
