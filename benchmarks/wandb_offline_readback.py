"""Read W&B offline run folders back, with wandb's own protobuf records, and print what a sync would upload.

Usage:
    python benchmarks/wandb_offline_readback.py runs/wandb/offline-run-*        # config keys, history, media
    python benchmarks/wandb_offline_readback.py RUN_DIR_1 RUN_DIR_2 --same-run  # and check a resume kept the id

Needs only wandb (no zoo import). A ``run-<id>.wandb`` file is wandb's transaction log: a 7-byte header
(``:W&B``, magic 0xBEE1, version) then LevelDB-log framed records (32 KiB blocks; each chunk is crc32 (4 bytes),
length (2), type (1: full, 2: first, 3: middle, 4: last)), each record a ``wandb_internal_pb2.Record``.
Exit status 1 if a folder has no run record, no history, or (with --same-run) the run ids differ.
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from wandb.proto import wandb_internal_pb2 as pb

BLOCK, CHUNK_HEADER, FILE_HEADER = 32768, 7, 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: Path):
    """Yield every ``pb.Record`` of a ``.wandb`` file, in order."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B transaction log (no ':W&B' header)")
    pos, parts = FILE_HEADER, []
    while pos + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < CHUNK_HEADER:  # block trailer: zero padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + CHUNK_HEADER])
        if kind == 0 and length == 0:  # preallocated zeros at the end of the file
            break
        payload = data[pos + CHUNK_HEADER:pos + CHUNK_HEADER + length]
        pos += CHUNK_HEADER + length
        if kind in (FULL, FIRST):
            parts = [payload]
        else:
            parts.append(payload)
        if kind in (FULL, LAST):
            record = pb.Record()
            record.ParseFromString(b"".join(parts))
            yield record


def _value(item) -> object:
    return json.loads(item.value_json) if item.value_json else None


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)


def _nest(items) -> dict:
    """History items as a dict; a media value split over nested keys (``images/x`` > ``width``) is rebuilt."""
    row: dict = {}
    for item in items:
        path = [item.key] if item.key else list(item.nested_key)
        node = row
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = _value(item)
    return row


@dataclass
class OfflineRun:
    folder: Path
    run_id: str = ""
    project: str = ""
    tags: list[str] = field(default_factory=list)
    group: str = ""
    resumed: bool = False
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    artifacts: list[dict] = field(default_factory=list)
    media: list[Path] = field(default_factory=list)


def read_run(folder: str | Path) -> OfflineRun:
    """Everything a ``wandb sync`` of ``folder`` (an ``offline-run-*`` directory) would send, as plain Python."""
    folder = Path(folder)
    logs = sorted(folder.glob("run-*.wandb"))
    if not logs:
        raise FileNotFoundError(f"{folder}: no run-*.wandb file; pass an offline-run-* folder")
    run = OfflineRun(folder)
    for record in records(logs[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run  # a later run record (an update) may leave fields empty: keep what is known
            run.run_id, run.project = r.run_id or run.run_id, r.project or run.project
            run.tags, run.group = list(r.tags) or run.tags, r.run_group or run.group
            run.resumed = run.resumed or r.resumed
            run.config.update({_key(i): _value(i) for i in r.config.update})
        elif kind == "config":
            run.config.update({_key(i): _value(i) for i in record.config.update})
        elif kind == "history":
            run.history.append(_nest(record.history.item))
        elif kind == "artifact":
            a = record.artifact
            files = [e.path for e in a.manifest.contents]
            run.artifacts.append({"name": a.name, "type": a.type, "aliases": list(a.aliases), "files": files})
    run.media = sorted(p for p in (folder / "files" / "media").rglob("*") if p.is_file())
    # wandb keeps config values as {"value": ...}
    run.config = {k: v["value"] if isinstance(v, dict) and set(v) == {"value"} else v for k, v in run.config.items()}
    return run


def describe(run: OfflineRun) -> None:
    print(f"== {run.folder}")
    print(f"run id {run.run_id}  project {run.project}  group {run.group or '-'}  tags {run.tags}  "
          f"resumed {run.resumed}")
    print(f"config keys ({len(run.config)}): {', '.join(sorted(run.config))}")
    for key in ("trainer", "model", "data"):
        if isinstance(run.config.get(key), dict):
            print(f"  config[{key!r}]: {json.dumps(run.config[key], default=str)[:200]}")
    print(f"history rows: {len(run.history)}")
    for row in run.history:
        scalars = {k: v for k, v in row.items() if isinstance(v, (int, float)) and not k.startswith("_")}
        media = [k for k, v in row.items() if isinstance(v, dict) and "_type" in v]
        print("  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in scalars.items())
              + (f"  media: {media}" if media else ""))
    print(f"media files ({len(run.media)}):")
    for p in run.media:
        print(f"  {p.relative_to(run.folder)}  {p.stat().st_size} bytes")
    for a in run.artifacts:
        print(f"artifact {a['name']} ({a['type']}, aliases {a['aliases']}): {', '.join(a['files'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="offline-run-* folders (or their parent wandb/ folder)")
    parser.add_argument("--same-run", action="store_true", help="fail unless all folders hold the same run id")
    args = parser.parse_args(argv)
    folders = [f for p in args.folders for f in (sorted(p.glob("offline-run-*")) if p.name == "wandb" else [p])]
    runs = [read_run(f) for f in folders]
    ok = True
    for run in runs:
        describe(run)
        ok &= bool(run.run_id and run.history)
    if args.same_run:
        ids = {r.run_id for r in runs}
        same = len(ids) == 1 and len(runs) > 1
        print(f"same run id across {len(runs)} folders: {same} ({', '.join(sorted(ids))})")
        ok &= same
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
