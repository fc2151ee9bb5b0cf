"""VAE (zoo/vae.py): the ELBO by hand, every variant's shapes and gradients, training on tiny MNIST idx files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import QUIET
from zoo.datamodules import MNISTDataModule

import zoo
from zoo.vae import VAE, bits_per_dim, negative_elbo


def test_negative_elbo_on_a_hand_checkable_case():
    # Two pixels x = (1, 0) with logits 0: each costs log 2. Posterior mu = (1, 2), var = (1, 2):
    # KL = 0.5 * [(1 + 1 - 1 - 0) + (4 + 2 - 1 - ln 2)] = 0.5 + 0.5 * (5 - ln 2).
    logits, x = torch.zeros(1, 1, 1, 2), torch.tensor([[[[1.0, 0.0]]]])
    mu, logvar = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, math.log(2)]])
    out = negative_elbo(logits, x, mu, logvar, beta=4.0)
    kl = 0.5 + 0.5 * (5 - math.log(2))
    assert out["recon"].item() == pytest.approx(2 * math.log(2))
    assert out["kl"].item() == pytest.approx(kl)
    assert out["nelbo"].item() == pytest.approx(2 * math.log(2) + kl)
    assert out["loss"].item() == pytest.approx(2 * math.log(2) + 4 * kl)  # β weights the KL in the loss only
    assert bits_per_dim(torch.tensor(2 * math.log(2)), 2).item() == pytest.approx(1.0)  # 1 bit per pixel


@pytest.mark.parametrize("kwargs", [{}, {"beta": 4.0}, {"kind": "ae", "noise_std": 0.3}, {"depth": 1},
                                    {"depth": 2, "residual": True}])
def test_vae_shapes_finite_loss_and_every_parameter_learns(kwargs):
    torch.manual_seed(0)
    model = zoo.get_model("vae", **kwargs)
    x = torch.rand(4, 1, 28, 28)
    out = model.losses(x, corrupt=model.hparams.noise_std > 0)
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert model.reconstruct(x).shape == x.shape and 0 <= model.reconstruct(x).min() <= model.reconstruct(x).max() <= 1
    assert model.sample(3).shape == (3, 1, 28, 28) and model.interpolate(x[0], x[1], steps=5).shape == (5, 1, 28, 28)
    # Rebuilt from its saved hyperparameters, with the same weights, it is the same model.
    twin = VAE(**model.hparams)
    twin.load_state_dict(model.state_dict())
    assert torch.equal(twin.reconstruct(x), model.reconstruct(x))


def test_vae_trains_and_test_logs_nelbo_and_bits_per_dim(mnist_dir):
    torch.manual_seed(0)
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=10, val_size=10)
    model = VAE(latent_dim=4, widths=[8, 16], hidden=32)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=1, **QUIET)
    before = trainer.test(model, datamodule=dm, verbose=False)[0]
    trainer = L.Trainer(max_epochs=4, limit_val_batches=1, **QUIET)
    trainer.fit(model, datamodule=dm)
    after = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert after["test/nelbo"] < before["test/nelbo"]  # 12 steps of Adam already help
    torch.manual_seed(123)  # the test's z draws are seeded per batch, not taken from the global RNG
    assert trainer.test(model, datamodule=dm, verbose=False)[0] == after
    assert after["test/bits_per_dim"] == pytest.approx(after["test/nelbo"] / (784 * math.log(2)), rel=1e-5)
    # Semi-amortized inference: the same weights scored with a refined q(z|x) give a tighter bound, reproducibly,
    # and the encoder's own bound is still reported next to it.
    model.hparams.refine_steps = 50
    refined = trainer.test(model, datamodule=dm, verbose=False)[0]
    assert refined["test/nelbo_encoder"] == pytest.approx(after["test/nelbo"], rel=1e-5)
    assert refined["test/nelbo"] < refined["test/nelbo_encoder"] - 1
    assert trainer.test(model, datamodule=dm, verbose=False)[0] == refined


def test_refine_tightens_the_elbo_and_leaves_the_networks_alone():
    torch.manual_seed(0)
    model = zoo.load("vae_mnist")  # a trained decoder (an untrained one ignores z: nothing to refine)
    x = (torch.rand(16, 1, 28, 28) > 0.7).float()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def nelbo(posterior):
        return model.losses(x, generator=torch.Generator().manual_seed(2), posterior=posterior)["nelbo"].item()

    with torch.inference_mode():  # as in Lightning's test loop
        mu, logvar = model.encode(x)
        refined = model.refine(x, mu, logvar, steps=30, generator=torch.Generator().manual_seed(1))
        assert nelbo(refined) < nelbo((mu, logvar)) - 1
    assert model.refine(x, mu, logvar) == (mu, logvar)  # refine_steps=0 (the default): the encoder's q
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_vae_cosine_schedule_decays_the_learning_rate_to_zero_by_the_last_step(mnist_dir):
    dm = MNISTDataModule(data_dir=str(mnist_dir), batch_size=10, val_size=10)
    model = VAE(latent_dim=4, widths=[8, 16], hidden=32, schedule="cosine")
    lrs = []

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, *args):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    L.Trainer(max_epochs=2, limit_val_batches=0, callbacks=[RecordLR()], **QUIET).fit(model, datamodule=dm)
    assert lrs[0] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs, lrs[1:]))
    assert lrs[-1] < 0.1 * lrs[0]  # cosine over the run's steps, whatever their number


def test_init_from_starts_training_from_a_published_vae():
    card = json.loads((Path(zoo.__file__).parent / "checkpoints" / "vae_mnist.json").read_text())
    model = zoo.get_model("vae", **card["hparams"], init_from="vae_mnist")
    published = zoo.load("vae_mnist")
    assert not torch.equal(model.decoder.fc[0].weight, published.decoder.fc[0].weight)
    model.setup("fit")  # what the Trainer calls before the first step
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), published.state_dict().values()))
    assert "init_from" not in model.hparams
