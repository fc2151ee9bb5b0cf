"""Export parity and int8 quantisation of every published checkpoint (issue #22; needs the `export` extra).

    ZOO_DATA_DIR=../shared/data python benchmarks/export_parity.py [--limit 2000] [--flagship-limit 1000]

Parity: every published checkpoint, every part (``zoo.export.parts``) and format is exported, reloaded in the runtime a
user would use (onnxruntime, torch.jit.load, torch.export.load) and compared with PyTorch: max |diff| over all
outputs and top-1 agreement of the logits. Image and series inputs are the checkpoint's own test split (its
DataModule, at most ``--limit`` items) when ``$ZOO_DATA_DIR`` has it, else random; latents, character ids and
recurrent states are random. The LSTMs' dynamic int8 TorchScript rows compare with the fp32 model (quantisation error).

Quantisation (measured first): cifar_cnn_cifar10 and the flagship cifar_resnet_cifar10 in fp32 (PyTorch eager; ONNX in onnxruntime)
and static int8 (onnxruntime's quantize_static, calibrated on 512 training images): test accuracy on the first
``--limit`` test images (``--flagship-limit`` for the flagship), latency at batch 1 and throughput at batch 256
measured side by side (arms alternated, first round discarded, medians), file size. Prints both tables and writes
``export_parity.json`` next to this file.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from _bench import alternate, machine, write_json
from torch.utils.data import DataLoader

import zoo
from zoo.errors import UserError
from zoo.export import (
    export_model,
    graph_spec,
    load_export,
    parts,
    quantize_dynamic_int8,
    quantize_static_int8,
)
from zoo.hub import PUBLISHED_DIR, _data_from_config, published

SUFFIX = {"onnx": ".onnx", "torchscript": ".pt", "exported-program": ".pt2"}
DATA_INPUTS = {"images", "a", "history"}  # graph inputs that a test split's batch[0] provides
CHUNK = 250


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration):
        return machine()


def datamodule(card: dict, model):
    """The checkpoint's DataModule, set up for test; None when its data is not under $ZOO_DATA_DIR."""
    try:
        dm = _data_from_config(card["data"])
        if hasattr(model, "data_config") and hasattr(dm, "data_config"):
            dm.data_config = lambda: dict(model.data_config)  # what a Trainer would pass it: the model's transform
        dm.setup("fit")
        return dm
    except (UserError, FileNotFoundError):
        return None


def take(loader, dm, limit: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) batches of ``limit`` items of ``loader``'s dataset drawn at random (seeded; a split's first
    items can be one class), prepared as the model sees them (the DataModule's ``on_after_batch_transfer``)."""
    order = torch.randperm(len(loader.dataset), generator=torch.Generator().manual_seed(seed))
    subset = DataLoader(loader.dataset, batch_size=CHUNK, sampler=order[:limit].sort().values.tolist(),
                        collate_fn=loader.collate_fn)
    return [dm.on_after_batch_transfer(tuple(batch[:2]), 0) for batch in subset]


@torch.no_grad()
def compare(path: Path, graph, batches: list[tuple[torch.Tensor, ...]], logits: bool) -> dict:
    """Max |diff| over every output of the file (in its runtime) vs ``graph`` (PyTorch), and top-1 agreement of
    the first output when it holds ``logits``."""
    run = load_export(path)
    diff, agree, total = 0.0, 0, 0
    for inputs in batches:
        got, expected = run(*inputs), graph(*inputs)
        diff = max(diff, *(float((g.float() - e.float()).abs().max()) for g, e in zip(got, expected)))
        agree += int((got[0].argmax(1) == expected[0].argmax(1)).sum())
        total += len(inputs[0])
    return {"max_abs_diff": diff, "top1_agreement": agree / total if logits else None}


def parity(limit: int, flagship_limit: int, tmp: Path) -> list[dict]:
    rows = []
    for name, card in published().items():
        model = zoo.load(name)
        dm = datamodule(card, model)
        for part in parts(model):
            spec = graph_spec(model, part)
            n = flagship_limit if name == "cifar_resnet_cifar10" else limit
            if dm is not None and spec.input_names[0] in DATA_INPUTS:
                batches = [(x,) for x, _ in take(dm.test_dataloader(), dm, n)]
                inputs = f"{sum(len(b[0]) for b in batches)} test"
            else:
                batches = [spec.example(64, seed=i) for i in range(4)]
                inputs = "random 256"
            logits = part in ("classifier", "step")
            arms = [(f, model) for f in SUFFIX]
            if part in ("step", "forecaster"):
                arms.append(("torchscript-int8", quantize_dynamic_int8(model)))
            for fmt, net in arms:
                path = tmp / f"{name}-{part}-{fmt}{SUFFIX[fmt.removesuffix('-int8')]}"
                start = time.perf_counter()
                export_model(net, path, fmt.removesuffix("-int8"), part)
                seconds = time.perf_counter() - start
                result = compare(path, spec.graph.eval(), batches, logits)  # int8 too: vs the fp32 model
                rows.append({"checkpoint": name, "part": part, "format": fmt, "inputs": inputs, **result,
                             "bytes": path.stat().st_size, "export_s": round(seconds, 2)})
                print_row(rows[-1])
    return rows


def print_row(r: dict) -> None:
    agree = f"{100 * r['top1_agreement']:.2f} %" if r["top1_agreement"] is not None else "-"
    print(f"{r['checkpoint']:<32}{r['part']:<11}{r['format']:<18}{r['inputs']:<12}{r['max_abs_diff']:>11.2e}"
          f"{agree:>10}{r['bytes'] / 1e6:>9.2f} MB{r['export_s']:>7.1f} s", flush=True)


# ---------------------------------------------------------------------------------------------- quantisation
def ort_logits(path: Path):
    """An onnxruntime session (CPU) as a function of a tensor, its worker threads not spinning between runs: a
    spinning pool of one arm would steal the cores from the next arm measured."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def quantization(limit: int, flagship_limit: int, tmp: Path) -> list[dict]:
    rows = []
    for name in ("cifar_cnn_cifar10", "cifar_resnet_cifar10"):
        model, card = zoo.load(name), published()[name]
        dm = datamodule(card, model)
        if dm is None:
            print(f"{name}: no CIFAR-10 under $ZOO_DATA_DIR; quantisation needs real images, skipped.")
            continue
        calibration = [x[i : i + 64] for x, _ in take(dm.train_dataloader(), dm, 512) for i in range(0, len(x), 64)]
        test = take(dm.test_dataloader(), dm, flagship_limit if name == "cifar_resnet_cifar10" else limit)
        fp32 = export_model(model, tmp / f"{name}.onnx", "onnx")
        int8 = quantize_static_int8(fp32, tmp / f"{name}.int8.onnx", calibration)
        files = {"pytorch fp32": PUBLISHED_DIR / card["weights"]["file"], "onnx fp32": fp32, "onnx int8": int8}
        arms = {"pytorch fp32": model, "onnx fp32": ort_logits(fp32), "onnx int8": ort_logits(int8)}
        one, batch = torch.randn(1, 3, 32, 32), torch.randn(256, 3, 32, 32)

        def timed(fn, x, reps):
            def measure() -> float:
                with torch.no_grad():
                    start = time.perf_counter()
                    for _ in range(reps):
                        fn(x)
                    return (time.perf_counter() - start) / (reps * len(x))
            return measure

        latency = alternate({k: timed(f, one, 100) for k, f in arms.items()}, repeats=5)
        throughput = alternate({k: timed(f, batch, 2) for k, f in arms.items()}, repeats=5)
        for arm, fn in arms.items():
            with torch.no_grad():
                correct = sum(int((fn(x).argmax(1) == y).sum()) for x, y in test)
            size = files[arm].stat().st_size
            rows.append({"checkpoint": name, "arm": arm, "test_images": sum(len(y) for _, y in test),
                         "accuracy": correct / sum(len(y) for _, y in test),
                         "latency_b1_ms": 1e3 * statistics.median(latency[arm]),
                         "throughput_b256_img_s": 1 / statistics.median(throughput[arm]), "bytes": size})
            r = rows[-1]
            print(f"{name:<24}{arm:<14}{r['test_images']:>7}{100 * r['accuracy']:>10.2f} %{r['latency_b1_ms']:>10.3f}"
                  f"{r['throughput_b256_img_s']:>12.0f}{r['bytes'] / 1e6:>9.2f} MB", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=2000, help="test items per checkpoint (default 2000)")
    parser.add_argument("--flagship-limit", type=int, default=1000, help="test images for cifar_resnet_cifar10")
    args = parser.parse_args()
    cpu = cpu_name()
    print(f"CPU: {cpu} ({machine()})\n")
    with tempfile.TemporaryDirectory() as tmp:  # the timings first, the longer parity sweep after them
        print(f"{'checkpoint':<24}{'arm':<14}{'images':>7}{'accuracy':>12}{'b1 ms':>10}{'b256 img/s':>12}{'size':>12}")
        load = [os.getloadavg()[0]]  # timings mean little if other jobs share the cores
        quant = quantization(args.limit, args.flagship_limit, Path(tmp))
        load.append(os.getloadavg()[0])
        print(f"1-minute load average before / after the timings: {load[0]:.2f} / {load[1]:.2f} "
              f"({os.cpu_count()} cores)\n")
        print(f"{'checkpoint':<32}{'part':<11}{'format':<18}{'inputs':<12}{'max |diff|':>11}{'top-1 agr':>10}"
              f"{'size':>12}{'export':>9}")
        rows = parity(args.limit, args.flagship_limit, Path(tmp))
    path = write_json(__file__, {"cpu": cpu, "limit": args.limit, "flagship_limit": args.flagship_limit,
                                 "load_average": load, "parity": rows, "quantization": quant})
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
