"""Every config in configs/ runs as a newcomer would try it: a few steps, or Lightning's fast_dev_run, on the real
data in ../shared/data (skipped without it), exits 0, and a real run leaves its final state where the README says:
runs/<config>/version_0/checkpoints/last.ckpt, next to config.yaml (and metrics.csv once something is logged)."""

from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
# Tiny batches keep each run to seconds; the paper-sized pix2pix keeps its batch of 1.
SMALL = {"pix2pix_people.yaml": []}

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"needs the real data in {SHARED_DATA}")


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("decoded")  # one decoded CIFAR-10 for the whole module


def run(config: Path, tmp_path, monkeypatch, shared_cache, *extra: str) -> int:
    monkeypatch.setenv("ZOO_DATA_DIR", str(SHARED_DATA))
    monkeypatch.setenv("ZOO_CACHE", str(shared_cache))
    monkeypatch.chdir(tmp_path)  # "runs/" is relative to where the command runs
    small = SMALL.get(config.name, ["--data.init_args.batch_size", "8"])
    return main(["fit", "--config", str(config), *small, "--trainer.enable_progress_bar", "false",
                 "--trainer.limit_val_batches", "2", *extra])


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_two_steps_leave_a_checkpoint_in_runs(config, tmp_path, monkeypatch, shared_cache):
    assert run(config, tmp_path, monkeypatch, shared_cache, "--trainer.max_steps", "2") == 0
    folder = tmp_path / "runs" / config.stem / "version_0"
    last = folder / "checkpoints" / "last.ckpt"
    assert last.is_file() and (folder / "config.yaml").is_file() and (folder / "hparams.yaml").is_file()
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] >= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing else in the current folder


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_fast_dev_run(config, tmp_path, monkeypatch, shared_cache):
    assert run(config, tmp_path, monkeypatch, shared_cache, "--trainer.fast_dev_run", "true") == 0
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["runs"])  # nothing in the current folder
