"""Pix2Pix (zoo/pix2pix.py) on tiny synthetic paired images: metrics, image callbacks, CLI, bf16 and DDP."""

import re
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import read_png, run_ddp_script, write_ab

import zoo
from zoo.callbacks import ImageGrid, ImageWriter
from zoo.cli import main
from zoo.datamodules.paired import PairedImageDataModule


def tiny_pix2pix(**kw):
    return zoo.get_model("pix2pix", image_size=32, gen_width=4, disc_width=4, **kw)


def trainer(tmp_path, **kw):
    defaults = dict(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                    enable_checkpointing=False, default_root_dir=tmp_path)
    return L.Trainer(**{**defaults, **kw})


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
    proc = run_ddp_script(tmp_path, DDP_SCRIPT.format(root=str(Path(__file__).resolve().parents[1])))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = sorted(re.findall(r"RANK (\d) STEPS (\d+) CHECKSUM (-?\d+\.\d{10})", proc.stdout + proc.stderr))
    assert [r[:2] for r in ranks] == [("0", "4"), ("1", "4")], proc.stdout[-2000:]
    assert ranks[0][2] == ranks[1][2]  # gradients were all-reduced: both replicas hold the same weights
