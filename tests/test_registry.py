"""Sweep every registered model through its own tiny instance and example batch: forward, finite loss, a gradient
reaching every trainable parameter; and the registry's contract (names, constructors, what LightningCLI accepts)."""

import inspect

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import zoo
from zoo.cli import main
from zoo.optim import create_optimizer



def tiny(name: str):
    torch.manual_seed(0)
    return zoo.get_model(name, **zoo.model_entry(name).tiny)


# training_step called outside a Trainer: its self.log calls are no-ops, which Lightning says with a warning.
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("name", zoo.list_models())
def test_every_model_trains_on_its_example_batch(name, tmp_path):
    model = tiny(name)
    batch = model.example_batch()
    x = model.example_input_array if model.example_input_array is not None else batch[0]  # what forward takes
    model.eval()
    with torch.no_grad():
        out = model(x)
    out = out[0] if isinstance(out, tuple) else out  # recurrent models also return their state
    assert len(out) == len(x) and torch.isfinite(out).all()
    model.train()
    if model.automatic_optimization:
        loss = model.training_step(batch, 0)
        assert torch.isfinite(loss)
        loss.backward()
        trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
        no_grad = [n for n, p in trainable.items() if p.grad is None or not torch.isfinite(p.grad).all()]
        assert trainable and not no_grad, f"parameters without a finite gradient: {no_grad}"
        return
    # Manual optimization (GANs): one Trainer step must update every parameter of both networks.
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = L.Trainer(fast_dev_run=1, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path)
    trainer.fit(model, DataLoader(TensorDataset(*batch), batch_size=len(batch[0])))
    unchanged = [n for n, p in model.named_parameters() if p.requires_grad and torch.equal(p, before[n])]
    assert not unchanged, f"not updated by one step: {unchanged}"


@pytest.mark.parametrize("name", zoo.list_models())
def test_constructor_is_what_the_cli_accepts(name, capsys):
    """Every constructor argument (the subclass's own and the shared ones it passes on) is a CLI option with the
    same default, and nothing else is; hyperparameters saved by the model are exactly those arguments."""
    entry = zoo.model_entry(name)
    arguments = zoo.constructor_arguments(entry.cls)
    with pytest.raises(SystemExit):
        main(["fit", "--model", entry.cls.__name__, "--print_config"])
    import yaml

    init_args = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert set(init_args) == set(arguments)
    for key, param in arguments.items():
        default = param.default
        if isinstance(default, tuple):
            default = list(default)
        if default is not inspect.Parameter.empty and not callable(default):
            assert init_args[key] == default, key
    saved = set(tiny(name).hparams)
    assert saved <= set(arguments) and saved >= set(arguments) - {"scheduler", "init_from"}


def test_misspelt_choice_is_rejected_with_the_allowed_values(capsys):
    with pytest.raises(SystemExit) as done:
        main(["fit", "--model", "CifarCNN", "--model.schedule", "cosin", "--print_config"])
    assert done.value.code != 0
    err = capsys.readouterr().err
    assert "cosin" in err and "'cosine'" in err and "'linear'" in err


def test_schedule_function_raises_on_unknown_names():
    from zoo.optim import per_step_schedule, warmup_decay

    with pytest.raises(ValueError, match="cosine"):
        warmup_decay(0, 10, 0.0, 0.0, 0.0, "cosin")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(ValueError, match="onecycle"):
        per_step_schedule(opt, zoo.get_model("cifar_cnn"), 0.0, 0.0, 0.0, "cosin")


def test_flat_cosine_holds_the_peak_then_anneals():
    from zoo.optim import warmup_decay

    values = [warmup_decay(step, 100, 0.0, 0.0, 0.0, "flat_cosine") for step in range(101)]
    assert values[:51] == [1.0] * 51 and values[75] == pytest.approx(0.5) and values[100] == pytest.approx(0.0)
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_registry_rules():
    with pytest.raises(ValueError, match="already registered"):
        zoo.add_model("cifar_cnn", zoo.model_entry("cifar_cnn").cls)
    assert zoo.list_models("cifar*") == ["cifar_cnn", "cifar_resnet"]
    with pytest.raises(KeyError, match="Registered models"):
        zoo.get_model("resnet9000")
    model = zoo.get_model("cifar_cnn", num_classes=7, dropout=0.1, lr=0.2)
    assert model.hparams.num_classes == 7 and model.hparams.dropout == 0.1 and model.hparams.lr == 0.2


def test_variants_carry_their_fixed_arguments():
    entry = zoo.model_entry("efficientnet_b0")
    assert entry.fixed and zoo.get_model("efficientnet_b0", pretrained=False).hparams.backbone == "efficientnet_b0"


def test_lr_and_weight_decay_reach_the_optimizer():
    """``lr``/``weight_decay``/``momentum`` are the model's; norm layers get no decay; the flagship's recipe holds."""
    model = zoo.get_model("cifar_cnn", lr=0.3, weight_decay=1e-3, schedule="constant")
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["nesterov"] and opt.defaults["momentum"] == 0.9
    assert {g["lr"] for g in opt.param_groups} == {0.3} and opt.param_groups[0]["weight_decay"] == 1e-3
    flagship = zoo.get_model("cifar_resnet", **zoo.model_entry("cifar_resnet").tiny, schedule="constant", warmup=0.0)
    groups = flagship.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == [1.5, 1.5 * 64]  # BN biases at 64x the LR ...
    assert groups[1]["weight_decay"] == pytest.approx(0.00133 / 64)  # ... and the same per-step decay
    ranger = zoo.get_model("cifar_cnn", optimizer="ranger", schedule="constant").configure_optimizers()
    assert "Lookahead" in type(ranger).__name__


@pytest.mark.parametrize(("name", "fused"), [("sgd", True), ("momentum", True), ("adam", True), ("adamw", True),
                                           ("radam", False), ("rmsprop", False), ("lamb", False)])
def test_optimizers_use_the_fused_kernel_where_torch_has_one(name, fused):
    """The fused step (several times faster on a CPU) takes the same step as the default loop."""
    torch.manual_seed(0)
    nets = [torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [create_optimizer(net.parameters(), name, 0.1, 0.01, fused=choice) for net, choice in zip(nets, (True, False))]
    assert bool(opts[0].defaults.get("fused")) is fused and not opts[1].defaults.get("fused")
    x = torch.randn(16, 8)
    for _ in range(3):
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            net(x).square().mean().backward()
            opt.step()
    torch.testing.assert_close(nets[0].weight, nets[1].weight)


def test_models_build_fused_optimizers():
    gan = zoo.get_model("dcgan", **zoo.model_entry("dcgan").tiny).configure_optimizers()
    assert len(gan) == 2 and all(opt.defaults["fused"] for opt in gan)
    vae = zoo.get_model("vae", **zoo.model_entry("vae").tiny).configure_optimizers()
    assert isinstance(vae, torch.optim.Adam) and vae.defaults["fused"]


def test_configure_optimizers_outside_a_trainer():
    """A zoo model in a hand-written loop: a constant LR needs no Trainer; a scheduled one says what to do."""
    opt = zoo.get_model("cifar_cnn", schedule="constant", warmup=0.0).configure_optimizers()
    assert isinstance(opt, torch.optim.Optimizer)
    with pytest.raises(RuntimeError, match="schedule='constant'"):
        zoo.get_model("cifar_cnn", schedule="cosine").configure_optimizers()
