"""Sweep every registered model: output shape, finite loss, a gradient reaching every trainable parameter."""

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import zoo


def images(b, c, s):
    return torch.randn(b, c, s, s)


# name -> (constructor overrides that keep the model tiny, a training batch, expected output shape of forward)
SWEEP = {
    "cifar_cnn": ({}, lambda: (images(4, 3, 32), torch.randint(0, 10, (4,))), (4, 10)),
    "cifar_resnet": ({"widths": (8, 16, 16)}, lambda: (images(4, 3, 32), torch.randint(0, 10, (4,))), (4, 10)),
    "efficientnet_lite0": ({"pretrained": False, "num_classes": 3}, lambda: (images(2, 3, 64), torch.tensor([0, 2])),
                           (2, 3)),
    "efficientnet_b0": ({"pretrained": False, "num_classes": 3}, lambda: (images(2, 3, 64), torch.tensor([0, 2])),
                        (2, 3)),
    "char_lstm": ({"vocab": "abcdef", "embed_dim": 8, "hidden_size": 16, "num_layers": 2},
                  lambda: (torch.randint(0, 6, (2, 10)), torch.randint(0, 6, (2, 10))), (2, 10, 6)),
    "lstm_forecaster": ({"hidden_size": 8}, lambda: (torch.randn(3, 12) * 10 + 100, torch.randn(3, 1) + 100), (3, 1)),
    "vae": ({}, lambda: (torch.rand(4, 1, 28, 28), torch.zeros(4, dtype=torch.long)), None),
    "dcgan": ({"gen_width": 8, "disc_width": 8}, lambda: (torch.rand(4, 1, 32, 32) * 2 - 1,), None),
    "pix2pix": ({"image_size": 32, "gen_width": 4, "disc_width": 4},
                lambda: (torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1), (2, 3, 32, 32)),
}
GANS = ["dcgan", "pix2pix"]  # manual optimization: trained by a Trainer step below instead of training_step


def test_sweep_covers_every_registered_model():
    assert sorted(SWEEP) == zoo.list_models(), "add new models to SWEEP"


@pytest.mark.parametrize("name", sorted(n for n in SWEEP if n not in GANS))
def test_forward_loss_and_gradients(name):
    torch.manual_seed(0)
    kwargs, make_batch, out_shape = SWEEP[name]
    model = zoo.get_model(name, **kwargs)
    batch = make_batch()
    if out_shape is not None:
        model.eval()
        with torch.no_grad():
            out = model(batch[0])
        out = out[0] if isinstance(out, tuple) else out  # recurrent models also return their state
        assert tuple(out.shape) == out_shape
    model.train()
    loss = model.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert trainable
    no_grad = [n for n, p in trainable.items() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not no_grad, f"parameters without a finite gradient: {no_grad}"


@pytest.mark.parametrize("name", GANS)
def test_gan_step_updates_both_networks(name, tmp_path):
    torch.manual_seed(0)
    kwargs, make_batch, out_shape = SWEEP[name]
    model = zoo.get_model(name, **kwargs)
    batch = make_batch()
    if out_shape is not None:
        with torch.no_grad():
            assert tuple(model.eval()(batch[0]).shape) == out_shape
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    loader = DataLoader(TensorDataset(*batch), batch_size=4)
    trainer = L.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path)
    trainer.fit(model, loader)
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged, f"not updated by one step: {unchanged}"


def test_registry_rules():
    with pytest.raises(ValueError, match="already registered"):
        zoo.add_model("cifar_cnn", zoo.model_entry("cifar_cnn").cls)
    assert zoo.list_models("cifar*") == ["cifar_cnn", "cifar_resnet"]
    with pytest.raises(KeyError, match="Registered models"):
        zoo.get_model("resnet9000")
    model = zoo.get_model("cifar_cnn", num_classes=7, dropout=0.1)
    assert model.hparams.num_classes == 7 and model.hparams.dropout == 0.1


def test_variants_carry_their_fixed_arguments():
    entry = zoo.model_entry("efficientnet_b0")
    assert entry.fixed and zoo.get_model("efficientnet_b0", pretrained=False).hparams.backbone == "efficientnet_b0"


def test_configure_optimizers_outside_a_trainer():
    """A zoo model in a hand-written loop: a constant LR needs no Trainer; a scheduled one says what to do."""
    import zoo

    opt = zoo.get_model("cifar_cnn", schedule="constant", warmup=0.0).configure_optimizers()
    assert isinstance(opt, torch.optim.Optimizer)
    with pytest.raises(RuntimeError, match="schedule='constant'"):
        zoo.get_model("cifar_cnn", schedule="cosine").configure_optimizers()
