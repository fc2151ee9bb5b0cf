"""zoo.weight_init and the classifiers' ``init`` option: each scheme sets the weights it names, "default" touches
nothing, and the option is applied once at fit start, before ``init_from`` and a ``--ckpt_path`` restore (which win)."""

import math

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import zoo
from zoo.weight_init import INIT_SCHEMES, init_weights

RELU_GAIN = math.sqrt(2)


def net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(16, 64, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.Flatten(), nn.Linear(256, 128),
                         nn.LayerNorm(128))


def perturb_norms(m: nn.Module) -> nn.Module:
    with torch.no_grad():
        for layer in (m[1], m[5]):
            layer.weight.uniform_(2, 3)
            layer.bias.uniform_(2, 3)
    return m


def xavier_std(w: torch.Tensor) -> float:
    fan_out, fan_in = w.shape[0] * w[0, 0].numel(), w.shape[1] * w[0, 0].numel()
    return math.sqrt(2 / (fan_in + fan_out))


def test_default_leaves_every_weight_alone():
    m = perturb_norms(net())
    before = {k: v.clone() for k, v in m.state_dict().items()}
    assert init_weights(m, "default") is m
    assert all(torch.equal(v, before[k]) for k, v in m.state_dict().items())


@pytest.mark.parametrize("scheme", [s for s in INIT_SCHEMES if s != "default"])
def test_every_scheme_zeroes_biases_and_resets_norm_layers(scheme):
    m = perturb_norms(net())
    before = m[0].weight.clone()
    init_weights(m, scheme)
    assert not torch.equal(m[0].weight, before)
    assert all(not layer.bias.any() for layer in (m[0], m[4], m[1], m[5]))
    assert all(torch.equal(layer.weight, torch.ones_like(layer.weight)) for layer in (m[1], m[5]))


@pytest.mark.parametrize("scheme,conv_std,linear_std", [
    ("xavier", lambda w: xavier_std(w), lambda w: xavier_std(w)),
    ("kaiming", lambda w: RELU_GAIN / math.sqrt(w[0].numel()), lambda w: RELU_GAIN / math.sqrt(w.shape[1])),
    ("cheatsheet", lambda w: RELU_GAIN * xavier_std(w), lambda w: xavier_std(w)),  # gain on conv only
])
def test_scheme_sets_the_weight_scale_it_names(scheme, conv_std, linear_std):
    m = init_weights(net(), scheme)
    conv, linear = m[0].weight, m[4].weight
    assert conv.std().item() == pytest.approx(conv_std(conv), rel=0.05)
    assert linear.std().item() == pytest.approx(linear_std(linear), rel=0.05)
    if scheme != "kaiming":  # Xavier-uniform: bounded by sqrt(3) standard deviations
        assert conv.abs().max() <= math.sqrt(3) * conv_std(conv) + 1e-6


def test_orthogonal_rows_are_orthonormal_up_to_the_gain():
    m = init_weights(net(), "orthogonal")
    conv, linear = m[0].weight.flatten(1), m[4].weight  # (64, 144), (128, 256): fewer rows than columns
    torch.testing.assert_close(conv @ conv.T, 2 * torch.eye(64), atol=1e-4, rtol=0)  # ReLU gain sqrt(2), squared
    torch.testing.assert_close(linear @ linear.T, torch.eye(128), atol=1e-4, rtol=0)


def test_unknown_scheme_lists_the_choices():
    with pytest.raises(ValueError, match="cheatsheet"):
        init_weights(net(), "glorot")


# ------------------------------------------------------------------------------------------ the model option
def tiny(**kwargs):
    torch.manual_seed(0)
    return zoo.get_model("cifar_cnn", dropout=0.0, num_classes=4, schedule="constant", **kwargs)


def test_init_is_applied_once_when_fitting_starts():
    model = tiny(init="cheatsheet")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.setup("validate")  # only fitting re-initialises
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    model.setup("fit")
    linear = model.net[-1]
    assert not linear.bias.any() and not torch.equal(linear.weight, before[f"net.{len(model.net) - 1}.weight"])
    with torch.no_grad():
        linear.bias.fill_(0.5)
    model.setup("fit")  # a second fit (e.g. after the LR finder) keeps the weights it has
    assert (linear.bias == 0.5).all()


def test_init_from_weights_win_over_the_init_scheme(tmp_path):
    source = tiny()
    ckpt = tmp_path / "source.ckpt"
    torch.save({"state_dict": source.state_dict(), "hyper_parameters": dict(source.hparams)}, ckpt)
    model = tiny(init="xavier", init_from=str(ckpt))
    torch.manual_seed(1)
    model.setup("fit")
    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key


def test_a_resumed_run_restores_its_weights_after_the_init_scheme(tmp_path):
    data = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.arange(8) % 4), batch_size=4)
    trainer_args = {"max_steps": 2, "accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                    "enable_model_summary": False, "default_root_dir": tmp_path}
    first = L.Trainer(**trainer_args, enable_checkpointing=False)
    first.fit(tiny(), data)
    first.save_checkpoint(tmp_path / "run.ckpt")
    saved = torch.load(tmp_path / "run.ckpt", weights_only=True)["state_dict"]
    model = tiny(init="orthogonal")
    L.Trainer(**trainer_args, enable_checkpointing=False).fit(model, data, ckpt_path=tmp_path / "run.ckpt")
    for key, value in saved.items():  # max_steps already reached: no step after the restore
        assert torch.equal(model.state_dict()[key], value), key
