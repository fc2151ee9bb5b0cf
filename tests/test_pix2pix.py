"""Pix2Pix and the paired DataModule on tiny synthetic files in every layout."""

import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from zoo.callbacks import ImageGrid, ImageWriter
from conftest import SHARED_DATA
from zoo.datamodules.common import CIFAR10_LICENCE, known_licence
from zoo.datamodules.paired import PairedImageDataModule, PairedImages, grayscale, split_ab
from zoo.cli import main


def write_ab(folder: Path, n: int, size=(64, 32), same_halves=False, seed=0) -> None:
    """n AB files: a random A on the left; B on the right (a copy of A when ``same_halves``, else A's negative)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    for i in range(n):
        a = rng.integers(0, 256, (h, w // 2, 3), dtype=np.uint8)
        b = a if same_halves else 255 - a
        Image.fromarray(np.concatenate([a, b], 1)).save(folder / f"{i:03d}.png")


def read_png(path) -> np.ndarray:
    """The pixels of an image file (H, W[, C]), the file closed again."""
    with Image.open(path) as image:
        return np.array(image)


@pytest.fixture
def ab_data(tmp_path) -> Path:
    root = tmp_path / "pairs"
    write_ab(root / "train", 6)
    write_ab(root / "val", 3, seed=1)
    return tmp_path


def tiny_pix2pix(**kw):
    return zoo.get_model("pix2pix", image_size=32, gen_width=4, disc_width=4, **kw)


def trainer(tmp_path, **kw):
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False, default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kw})


def test_ab_files_split_into_their_halves(ab_data):
    dm = PairedImageDataModule("pairs", data_dir=str(ab_data), load_size=32, crop_size=32)
    dm.setup()
    assert dm.layout == "ab" and [len(dm.datasets[s]) for s in ("train", "val", "test")] == [6, 3, 3]
    a, b = dm.datasets["val"][0]
    raw = torch.from_numpy(read_png(ab_data / "pairs" / "val" / "000.png")).permute(2, 0, 1)
    left, right = split_ab(raw)
    torch.testing.assert_close(a, left.float() / 127.5 - 1)
    torch.testing.assert_close(b, right.float() / 127.5 - 1)
    torch.testing.assert_close(a, -b)  # B was written as A's negative


def test_direction_b_to_a_swaps_the_halves(ab_data):
    dm = PairedImageDataModule("pairs", data_dir=str(ab_data), direction="BtoA", load_size=32, crop_size=32)
    dm.setup()
    a, b = dm.datasets["val"][0]
    raw = torch.from_numpy(read_png(ab_data / "pairs" / "val" / "000.png")).permute(2, 0, 1)
    torch.testing.assert_close(a, split_ab(raw)[1].float() / 127.5 - 1)


def test_joint_augmentation_keeps_pairs_aligned_and_odd_sizes_are_resized(tmp_path):
    write_ab(tmp_path / "same" / "train", 4, size=(90, 41), same_halves=True)  # odd, non-square halves
    items = sorted((tmp_path / "same" / "train").glob("*.png"))
    ds = PairedImages(items, "ab", "AtoB", load_size=40, crop_size=32, train=True)
    crops = set()
    for i in range(4):
        for _ in range(5):
            torch.manual_seed(len(crops) + 10 * i)
            a, b = ds[i]
            assert a.shape == b.shape == (3, 32, 32)
            torch.testing.assert_close(a, b)  # identical halves stay identical through crop and flip
            crops.add(a.sum().item())
    assert len(crops) > 4  # the crops really vary


def test_separate_folders_pair_by_name_and_derived_layouts(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for side in ("A", "B"):
            (tmp_path / "sep" / split / side).mkdir(parents=True)
        for i in range(4):
            img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / "sep" / split / "A" / f"{i}.png")
            Image.fromarray(255 - img).save(tmp_path / "sep" / split / "B" / f"{i}.png")
    Image.fromarray(img).save(tmp_path / "sep" / "train" / "A" / "unpaired.png")
    dm = PairedImageDataModule("sep", data_dir=str(tmp_path), load_size=32, crop_size=32, val_size=1)
    dm.setup()
    assert dm.layout == "separate" and len(dm.datasets["train"]) == 3 and len(dm.datasets["val"]) == 1
    a, b = dm.datasets["test"][0]
    torch.testing.assert_close(a, -b)
    # Any folder of images (here the B side, in sub-folders) becomes grey -> colour pairs.
    gray = PairedImageDataModule("sep", data_dir=str(tmp_path), layout="grayscale", load_size=32, crop_size=32)
    gray.setup()
    assert gray.channels == (1, 3) and len(gray.datasets["test"]) == 8
    a, b = gray.datasets["test"][0]
    torch.testing.assert_close(a, grayscale((b + 1) / 2) * 2 - 1)
    edges = PairedImageDataModule("sep", data_dir=str(tmp_path), layout="edges", load_size=32, crop_size=32)
    edges.setup()
    a, _ = edges.datasets["test"][0]
    assert a.shape == (1, 32, 32) and a.min() >= -1 and a.max() <= 1 and a.std() > 0
    card = edges.card_info()
    assert card["licence"] is None  # a folder the zoo does not know: no licence claimed
    assert card["train_split"] == "train minus 500 images held out for validation (seed 0)"
    assert card["test_split"] == "test"


def test_cards_of_derived_cifar_pairs_carry_the_cifar_licence(tmp_path):
    (tmp_path / "cifar10-jpg" / "train").mkdir(parents=True)
    dm = PairedImageDataModule("cifar10-jpg", data_dir=str(tmp_path), layout="edges", load_size=32, crop_size=32)
    assert dm.card_info()["licence"].startswith("CIFAR-10")


def test_licences_are_looked_up_by_the_dataset_folder_or_file_name():
    assert known_licence("tinyshakespeare/input.txt").startswith("Shakespeare")
    assert known_licence("/data/timeseries/airline-passengers.csv").startswith("Box-Jenkins")
    assert known_licence("cifar10-jpg") == known_licence("x/cifar10") == CIFAR10_LICENCE
    assert known_licence("my_photos/train") is None and known_licence("corpus.txt") is None


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(FileNotFoundError, match="No paired dataset at .*nothing_here"):
        PairedImageDataModule("nothing_here", data_dir=str(tmp_path)).setup()


def test_channel_mismatch_between_data_and_model_is_explained(ab_data, tmp_path):
    dm = PairedImageDataModule("pairs", data_dir=str(ab_data), layout="grayscale", load_size=32, crop_size=32)
    with pytest.raises(ValueError, match="--model.in_channels 1"):
        trainer(tmp_path, max_steps=1).fit(tiny_pix2pix(), dm)


def test_validation_reports_metrics_next_to_the_input_baseline(tmp_path):
    write_ab(tmp_path / "same" / "train", 4, size=(64, 32), same_halves=True)
    dm = PairedImageDataModule("same", data_dir=str(tmp_path), load_size=32, crop_size=32, batch_size=2, val_size=2)
    t = trainer(tmp_path, max_epochs=1)
    t.fit(tiny_pix2pix(), dm)
    m = t.callback_metrics
    for k in ("l1", "psnr", "ssim"):
        assert f"val/{k}" in m and f"val/baseline_{k}" in m
    # A == B here, so the identity baseline is perfect; a one-step model is not.
    assert m["val/baseline_l1"] == 0 and m["val/baseline_ssim"] > 0.999 and m["val/l1"] > 0


def test_grid_and_predict_write_files(ab_data, tmp_path):
    dm = PairedImageDataModule("pairs", data_dir=str(ab_data), load_size=32, crop_size=32, batch_size=2)
    grid, writer = ImageGrid(num_images=2, nrow=6), ImageWriter(output_dir=str(tmp_path / "out"))
    model = tiny_pix2pix()
    t = trainer(tmp_path, max_epochs=1, callbacks=[grid, writer])
    t.fit(model, dm)
    (png,) = grid.saved
    assert png.name == "translation_epoch000.png"
    assert read_png(png).shape[:2] == (2 + 34, 2 + 6 * 34)  # one row: input | output | target for two pairs
    t.predict(model, dm)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["000.png", "001.png", "002.png"]  # the val files' names
    assert read_png(tmp_path / "out" / "000.png").shape[:2] == (32, 32)


def test_cli_configs_fit_one_step(ab_data, tmp_path):
    root = Path(__file__).resolve().parents[1]
    main(["fit", "--config", str(root / "configs" / "pix2pix_people_cpu.yaml"), "--data.data_dir", str(ab_data),
          "--data.folder", "pairs", "--data.load_size", "40", "--data.crop_size", "32", "--model.image_size", "32",
          "--model.gen_width", "4", "--model.disc_width", "4", "--trainer.fast_dev_run", "1",
          "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.enable_progress_bar", "false"])


@pytest.mark.skipif(not (SHARED_DATA / "pix2pix_people_outline").is_dir(), reason="shared pix2pix data absent")
def test_real_people_outline_pairs_load_at_any_size():
    dm = PairedImageDataModule("pix2pix_people_outline", data_dir=str(SHARED_DATA), layout="ab", load_size=143,
                               crop_size=128)
    dm.setup()
    assert len(dm.datasets["train"]) == 100 and len(dm.datasets["val"]) == 155
    for i in range(0, 155, 31):  # some of these are less than 256 px high
        a, b = dm.datasets["val"][i]
        assert a.shape == b.shape == (3, 128, 128)


def test_bf16_mixed_step_updates_both_networks(tmp_path):
    torch.manual_seed(0)
    model = tiny_pix2pix()
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    data = torch.utils.data.TensorDataset(torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 3, 32, 32) * 2 - 1)
    t = trainer(tmp_path, max_steps=2, precision="bf16-mixed")
    t.fit(model, torch.utils.data.DataLoader(data, batch_size=2))
    assert torch.isfinite(t.callback_metrics["train/loss_g"]) and torch.isfinite(t.callback_metrics["train/loss_d"])
    assert all(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))


DDP_SCRIPT = """
import sys, torch, lightning as L
import zoo
torch.manual_seed(0)  # same initial weights on both ranks; different pairs via the DistributedSampler
a, b = torch.rand(16, 3, 32, 32) * 2 - 1, torch.rand(16, 3, 32, 32) * 2 - 1
model = zoo.get_model("pix2pix", image_size=32, gen_width=4, disc_width=4)
trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=1, limit_train_batches=2,
                    logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
trainer.fit(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(a, b), batch_size=2))
total = sum(p.double().sum().item() for p in model.parameters())
print(f"RANK {{trainer.global_rank}} STEPS {{trainer.global_step}} CHECKSUM {{total:.10f}}", flush=True)
"""


def test_two_process_cpu_ddp_fit(tmp_path):
    script = tmp_path / "ddp_fit.py"
    script.write_text(DDP_SCRIPT.format(root=str(Path(__file__).resolve().parents[1])))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, str(script)], check=False, cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = sorted(re.findall(r"RANK (\d) STEPS (\d+) CHECKSUM (-?\d+\.\d{10})", proc.stdout + proc.stderr))
    assert [r[:2] for r in ranks] == [("0", "4"), ("1", "4")], proc.stdout[-2000:]
    assert ranks[0][2] == ranks[1][2]  # gradients were all-reduced: both replicas hold the same weights
