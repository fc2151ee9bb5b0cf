"""DCGAN (zoo/dcgan.py): shapes and init, manual optimisation, two-process DDP, and its Fréchet distance at test time
(no network, no real data)."""

from __future__ import annotations

import re
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import QUIET, run_ddp_script

import zoo
from zoo.dcgan import DCGAN
from zoo.metrics import PenultimateFeatures

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("image_size", [32, 64])
def test_dcgan_shapes_and_paper_init(image_size):
    torch.manual_seed(0)
    model = zoo.get_model("dcgan", image_size=image_size, gen_width=16, disc_width=16)
    images = model.sample(3)
    assert images.shape == (3, 1, image_size, image_size) and images.abs().max() <= 1
    assert model.discriminator(images).shape == (3,)
    convs = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert all(abs(m.weight.std().item() - 0.02) < 0.004 for m in convs if m.weight.numel() > 1000)
    with pytest.raises(ValueError, match="power of two"):
        DCGAN(image_size=28)


class TinyImages(torch.utils.data.Dataset):
    def __init__(self, n: int = 16, size: int = 16):
        self.x = torch.rand(n, 1, size, size) * 2 - 1

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], 0


def tiny_gan() -> DCGAN:
    return DCGAN(latent_dim=8, gen_width=8, disc_width=8, image_size=16)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_one_manual_step_updates_both_networks(precision):
    torch.manual_seed(0)
    model = tiny_gan()
    g0 = [p.detach().clone() for p in model.generator.parameters()]
    d0 = [p.detach().clone() for p in model.discriminator.parameters()]
    trainer = L.Trainer(max_steps=1, precision=precision, **QUIET)
    trainer.fit(model, torch.utils.data.DataLoader(TinyImages(), batch_size=8))
    assert trainer.global_step == 2  # Lightning counts one step per optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(g0, model.generator.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(d0, model.discriminator.parameters()))
    logged = trainer.callback_metrics
    assert torch.isfinite(logged["train/loss_d"]) and torch.isfinite(logged["train/loss_g"])
    twin = DCGAN(**model.hparams)  # rebuildable from its saved (primitive) hyperparameters
    twin.load_state_dict(model.state_dict())


DDP_SCRIPT = """
import sys, torch, lightning as L
from zoo.dcgan import DCGAN
torch.manual_seed(0)  # same initial weights on both ranks; different data via the DistributedSampler
x = torch.rand(32, 1, 16, 16) * 2 - 1
model = DCGAN(latent_dim=8, gen_width=8, disc_width=8, image_size=16)
trainer = L.Trainer(strategy="ddp", accelerator="cpu", devices=2, max_epochs=1, limit_train_batches=2,
                    logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
trainer.fit(model, torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x), batch_size=4))
total = sum(p.double().sum().item() for p in model.parameters())
print(f"RANK {{trainer.global_rank}} STEPS {{trainer.global_step}} CHECKSUM {{total:.10f}}", flush=True)
"""


def test_two_process_cpu_ddp_fit(tmp_path):
    proc = run_ddp_script(tmp_path, DDP_SCRIPT.format(root=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = sorted(re.findall(r"RANK (\d) STEPS (\d+) CHECKSUM (-?\d+\.\d{10})", proc.stdout + proc.stderr))
    assert [r[:2] for r in ranks] == [("0", "4"), ("1", "4")], proc.stdout[-2000:]
    assert ranks[0][2] == ranks[1][2]  # gradients were all-reduced: both replicas hold the same weights


def test_dcgan_test_logs_frechet_distance_and_floor():
    torch.manual_seed(0)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 6), torch.nn.ReLU(),
                                     torch.nn.Linear(6, 10))
    features = PenultimateFeatures(classifier)
    assert features(torch.zeros(2, 1, 16, 16)).shape == (2, 6)
    model = tiny_gan()
    model.attach_features(features)
    assert not any("classifier" in k for k in model.state_dict())  # the extractor is not saved with the GAN
    loader = torch.utils.data.DataLoader(TinyImages(n=64), batch_size=16)
    result = L.Trainer(**QUIET).test(model, loader, verbose=False)[0]
    assert result["test/frechet_distance"] > result["test/frechet_distance_floor"] >= 0  # noise vs real images


def test_dcgan_loads_its_fd_classifier_by_source_and_reports_reproducible_distances(tmp_path):
    """``fd_features`` names a zoo checkpoint (here a Lightning .ckpt of a 1-channel classic CNN fitted one step);
    two test runs of the same GAN give the same distances, because the generated images are seeded."""
    from zoo.cifar_cnn import CifarCNN

    torch.manual_seed(0)
    images = TinyImages(n=64, size=32)
    labelled = torch.utils.data.TensorDataset(images.x, torch.randint(0, 10, (64,)))
    trainer = L.Trainer(**{**QUIET, "enable_checkpointing": True}, max_steps=1, default_root_dir=tmp_path)
    classifier = CifarCNN(in_channels=1)
    classifier.hparams["_class_path"] = "zoo.cifar_cnn.CifarCNN"  # as `zoo fit` (LightningCLI) records it
    trainer.fit(classifier, torch.utils.data.DataLoader(labelled, batch_size=16))
    ckpt = tmp_path / "classifier.ckpt"
    trainer.save_checkpoint(ckpt)

    gan = DCGAN(latent_dim=8, gen_width=8, disc_width=8, image_size=32, fd_features=str(ckpt))
    loader = torch.utils.data.DataLoader(images, batch_size=16)
    runs = [L.Trainer(**QUIET).test(gan, loader, verbose=False)[0] for _ in range(2)]
    assert runs[0]["test/frechet_distance"] > runs[0]["test/frechet_distance_floor"] >= 0
    assert runs[0] == runs[1]
    assert not any(k.startswith("_features") or "classifier" in k for k in gan.state_dict())
