"""Fault injection: kill, stop, poison and corrupt short real-data runs of each family, resume, and compare with the
uninterrupted run. Prints the table the faults issue asks for and writes benchmarks/faults.json.

    ZOO_DATA_DIR=../shared/data python benchmarks/faults.py                  # every family, 2 trials per fault
    ZOO_DATA_DIR=../shared/data python benchmarks/faults.py --families classifier --trials 1   # what the slow test runs

Each run is `python -m zoo fit --config configs/<family>.yaml` cut to a few batches per epoch, with last.ckpt every
``--every`` steps. Faults: SIGKILL at a seeded random step (then resume from last.ckpt), SIGTERM at a random step
(resume), SIGKILL in the middle of writing a checkpoint (resume from the previous one), a truncated and a
bit-flipped cache of decoded data (the run must rebuild it and train as the reference did), a NaN injected into the
weights (the run must stop, last.ckpt must stay finite), a truncated and a bit-flipped last.ckpt (the resume must
refuse it in one line), an unwritable run folder and a full disk (one line, non-zero exit).
"steps lost" is the work redone after the fault; "max |dw|" compares the resumed run's final weights with the
uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = {  # family -> (config, extra arguments that keep the run to seconds)
    "classifier": ("cifar_cnn", ["--data.batch_size", "32"]),
    "dcgan": ("dcgan_fashion_mnist", ["--data.batch_size", "32", "--model.gen_width", "16", "--model.disc_width",
                                      "16"]),
    "vae": ("vae_mnist", ["--data.batch_size", "32"]),
    "char_lstm": ("lstm_tinyshakespeare_cpu", ["--data.batch_size", "16", "--trainer.max_time", "null",
                                               "--trainer.val_check_interval", "null",
                                               "--trainer.check_val_every_n_epoch", "1"]),
}


class KillAt(L.Callback):
    """Sends this process ``signal`` at the end of the first batch that reaches optimizer step ``step`` (a GAN makes
    two steps a batch), after writing that step to ``record``."""

    def __init__(self, step: int, signal: str = "SIGKILL", record: str = ""):
        self.step, self.signal, self.record = step, signal, record

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            if self.record:
                Path(self.record).write_text(str(trainer.global_step))
            os.kill(os.getpid(), getattr(signal, self.signal))


class KillDuringSave(L.Callback):
    """SIGKILLs this process while it writes the first checkpoint at or after optimizer step ``step``: a thread waits
    for the temporary file to appear and grow, then kills (a kill in the middle of a write). That checkpoint carries
    64 MB of ballast, so its write lasts long enough to be caught midway even for a small model."""

    def __init__(self, step: int, record: str = ""):
        self.step, self.record = step, record

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.global_step < self.step:
            return
        import threading
        import time

        if getattr(self, "armed", False):
            return
        self.armed = True
        checkpoint["ballast"] = torch.zeros(16 * 2**20)  # never read: the process dies while writing it
        folder = Path(trainer.checkpoint_callback.dirpath)
        if self.record:
            Path(self.record).write_text(str(trainer.global_step))

        def kill_when_writing():
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if any(p.stat().st_size > 0 for p in folder.glob(".*.partial*")):
                    break
                time.sleep(0.0005)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=kill_when_writing, daemon=True).start()


class NanAt(L.Callback):
    """Fills the first weight with NaN after optimizer step ``step``: the next loss is NaN."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step and not getattr(self, "done", False):
            self.done = True
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def config_with_checkpoint_every(family: str, every: int, folder: Path) -> Path:
    """The family's config with its LastCheckpoint saving every ``every`` steps."""
    import yaml

    name, _ = FAMILIES[family]
    config = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text())
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"] == "LastCheckpoint":
            cb["init_args"] = {"every_n_train_steps": every}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def fit(family: str, root: Path, args: argparse.Namespace, *extra: str) -> subprocess.CompletedProcess:
    _, small = FAMILIES[family]
    cmd = [sys.executable, "-m", "zoo", "fit", "--config", str(args.configs[family]), *small,
           "--trainer.max_epochs", str(args.epochs), "--trainer.max_steps", "-1",
           "--trainer.limit_train_batches", str(args.batches), "--trainer.limit_val_batches", "2",
           "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *extra]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "PYTHONWARNINGS": "ignore"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)


def last(root: Path) -> tuple[dict, Path]:
    paths = sorted(root.rglob("last.ckpt"))
    return torch.load(paths[0], map_location="cpu", weights_only=True), paths[0]


def max_diff(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())


def one_line(proc: subprocess.CompletedProcess) -> bool:
    """Non-zero exit with a `zoo: error:` line and no traceback."""
    return proc.returncode != 0 and "zoo: error:" in proc.stderr and "Traceback" not in proc.stderr


def run_family(family: str, args: argparse.Namespace, tmp: Path, rng: random.Random) -> list[dict]:
    rows = []
    ref_run = fit(family, tmp / "ref", args)
    assert ref_run.returncode == 0, ref_run.stderr[-3000:]
    reference, _ = last(tmp / "ref")
    total = reference["global_step"]
    for fault in ("SIGKILL", "SIGTERM"):
        row = {"family": family, "fault": f"{fault} at a random step", "trials": args.trials, "survived": 0,
               "steps_lost": [], "max_dw": 0.0, "data_lost": 0}
        for trial in range(args.trials):
            step = rng.randrange(2, total - 1)
            root = tmp / f"{fault}{trial}"
            record = tmp / f"{fault}{trial}.step"
            killed = fit(family, root, args, "--trainer.callbacks+=faults.KillAt", f"--trainer.callbacks.step={step}",
                         f"--trainer.callbacks.signal={fault}", f"--trainer.callbacks.record={record}")
            step = int(record.read_text()) if record.is_file() else step
            if list(root.rglob("last.ckpt")):
                saved, path = last(root)
                resumed = fit(family, root, args, "--ckpt_path", str(path))
            else:  # killed before the first checkpoint: nothing to resume, the run starts again
                saved, resumed = {"global_step": 0}, fit(family, root, args)
            final, _ = last(root)
            ok = killed.returncode != 0 and resumed.returncode == 0 and final["global_step"] == total
            row["survived"] += ok
            row["steps_lost"].append(step - saved["global_step"])
            row["max_dw"] = max(row["max_dw"], max_diff(reference["state_dict"], final["state_dict"]))
            row["data_lost"] += int(not ok)
        rows.append(row)
    # SIGKILL while last.ckpt is being written: the previous last.ckpt stays whole and the run resumes from it.
    row = {"family": family, "fault": "SIGKILL mid checkpoint write", "trials": args.trials, "survived": 0,
           "steps_lost": [], "max_dw": 0.0, "data_lost": 0}
    for trial in range(args.trials):
        step = rng.randrange(args.every + 1, total - 1)
        root, record = tmp / f"killsave{trial}", tmp / f"killsave{trial}.step"
        killed = fit(family, root, args, "--trainer.callbacks+=faults.KillDuringSave",
                     f"--trainer.callbacks.step={step}", f"--trainer.callbacks.record={record}")
        step = int(record.read_text()) if record.is_file() else step
        saved, path = last(root)  # loads: never half a file
        resumed = fit(family, root, args, "--ckpt_path", str(path))
        final, _ = last(root)
        leftovers = list(path.parent.glob(".*.partial*"))  # the killed write's temporary file, removed on resume
        ok = killed.returncode == -signal.SIGKILL and resumed.returncode == 0 and final["global_step"] == total
        row["survived"] += ok and not leftovers
        row["steps_lost"].append(step - saved["global_step"])
        row["max_dw"] = max(row["max_dw"], max_diff(reference["state_dict"], final["state_dict"]))
        row["data_lost"] += int(not ok)
    rows.append(row)
    # A damaged cache of decoded data (truncated, bit-flipped) is noticed and rebuilt: same weights as the reference.
    caches = sorted(p for p in Path(os.environ["ZOO_CACHE"]).rglob("*") if p.is_file() and p.stat().st_size > 4096)
    for damage in ("truncated", "bit-flipped"):
        if not caches:
            break
        for cache in caches:
            data = bytearray(cache.read_bytes())
            if damage == "truncated":
                data = data[: len(data) // 2]
            else:
                data[len(data) // 2] ^= 0x10
            cache.write_bytes(bytes(data))
        run = fit(family, tmp / f"cache-{damage}", args)
        state, _ = last(tmp / f"cache-{damage}") if run.returncode == 0 else ({"state_dict": {}}, None)
        dw = max_diff(reference["state_dict"], state["state_dict"]) if run.returncode == 0 else None
        rows.append({"family": family, "fault": f"{damage} data cache", "trials": 1,
                     "survived": int(run.returncode == 0 and dw == 0.0), "steps_lost": [], "max_dw": dw,
                     "data_lost": int(run.returncode != 0)})
    # NaN: the run stops with one line and the last good checkpoint stays finite.
    root = tmp / "nan"
    step = rng.randrange(2, total - 1)
    nan = fit(family, root, args, "--trainer.callbacks+=faults.NanAt", f"--trainer.callbacks.step={step}")
    state, _ = last(root)
    finite = all(v.isfinite().all() for v in state["state_dict"].values() if v.is_floating_point())
    rows.append({"family": family, "fault": "NaN in the weights", "trials": 1, "survived": int(one_line(nan) and finite),
                 "steps_lost": [step - state["global_step"]], "max_dw": None, "data_lost": int(not finite)})
    # Damaged checkpoints: a resume must refuse them in one line.
    for damage in ("truncated", "bit-flipped"):
        root = tmp / damage
        _, path = last(tmp / "ref")
        bad = root / "last.ckpt"
        bad.parent.mkdir(parents=True)
        data = bytearray(path.read_bytes())
        bad.write_bytes(bytes(data[: len(data) // 2]) if damage == "truncated" else bytes(
            data[:100] + bytearray([data[100] ^ 0xFF]) + data[101:200] + bytearray(len(data) - 200)))
        proc = fit(family, root / "run", args, "--ckpt_path", str(bad))
        rows.append({"family": family, "fault": f"{damage} last.ckpt", "trials": 1, "survived": int(one_line(proc)),
                     "steps_lost": [], "max_dw": None, "data_lost": 0})
    # An output folder that cannot be written (a file in the way: root ignores permissions) and a full disk (a 1 MiB
    # tmpfs, where root may mount one): one line, non-zero exit, nothing half-written.
    blocked = tmp / "blocked"
    blocked.write_text("not a folder")
    proc = fit(family, blocked / "runs", args)
    rows.append({"family": family, "fault": "unwritable run folder", "trials": 1, "survived": int(one_line(proc)),
                 "steps_lost": [], "max_dw": None, "data_lost": 0})
    full = tmp / "full"
    full.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], capture_output=True).returncode == 0:
        try:
            proc = fit(family, full, args)
            partial = [p for p in full.rglob("*.ckpt")]  # a checkpoint that is there must load
            intact = all(torch.load(p, map_location="cpu", weights_only=True) is not None for p in partial)
            rows.append({"family": family, "fault": "full disk (1 MiB tmpfs)", "trials": 1,
                         "survived": int(one_line(proc) and intact), "steps_lost": [], "max_dw": None,
                         "data_lost": int(not intact)})
        finally:
            subprocess.run(["umount", str(full)], capture_output=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batches", type=int, default=8, help="training batches per epoch")
    parser.add_argument("--every", type=int, default=3, help="LastCheckpoint's every_n_train_steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("faults.json"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        args.configs = {f: config_with_checkpoint_every(f, args.every, Path(tmp)) for f in args.families}
        for family in args.families:
            os.environ["ZOO_CACHE"] = str(Path(tmp) / family / "cache")  # its own caches, damaged on purpose below
            rows += run_family(family, args, Path(tmp) / family, rng)
    print(f"{'family':<11}{'fault':<30}{'trials':>7}{'survived':>9}  {'steps lost':<12}{'max |dw|':>10}{'data lost':>10}")
    for r in rows:
        dw = "-" if r["max_dw"] is None else f"{r['max_dw']:.1e}"
        lost = ",".join(map(str, r["steps_lost"])) or "-"
        print(f"{r['family']:<11}{r['fault']:<30}{r['trials']:>7}{r['survived']:>9}  {lost:<12}{dw:>10}"
              f"{r['data_lost']:>10}")
    args.out.write_text(json.dumps({"cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0]
                                    .strip(" :\t"), "args": {k: str(v) for k, v in vars(args).items() if k != "configs"},
                                    "rows": rows}, indent=2) + "\n")
    return 0 if all(r["survived"] == r["trials"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
