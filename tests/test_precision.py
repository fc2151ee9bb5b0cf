"""Every model family fits in mixed precision through its own config and the CLI: bf16 on the CPU (CI), and fp16 and
bf16 on a CUDA GPU (skipped without one; run ``pytest tests/test_precision.py`` on a machine that has one); and
``--precision auto`` chooses by measurement, on both kinds of CPU (with and without native bf16) faked."""

from pathlib import Path

import pytest
import torch
from conftest import image_root  # noqa: F401 (fixture)
from conftest import make_raw
from conftest import TINY, csv_file, text_file  # noqa: F401 (fixtures)
from conftest import ab_data  # noqa: F401 (fixture)

from zoo import precision
from zoo.lightning_cli import ZooCLI
from zoo.precision import FP32, Arm, Measurement, Workload, choose, probe

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
PRECISIONS = [pytest.param(("cpu", "bf16-mixed"), id="cpu-bf16"),
              pytest.param(("gpu", "16-mixed"), id="gpu-fp16", marks=NO_GPU),
              pytest.param(("gpu", "bf16-mixed"), id="gpu-bf16", marks=NO_GPU)]


def fit(tmp_path, config: str, precision: tuple[str, str], *extra: str) -> None:
    """Two training steps and one validation batch; every logged metric must be finite."""
    accelerator, precision = precision
    cli = ZooCLI(args=["--config", str(CONFIGS / f"{config}.yaml"), "--trainer.accelerator", accelerator,
                       "--trainer.precision", precision, "--trainer.devices", "1", "--trainer.fast_dev_run", "2",
                       "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
                       *extra], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.model.device.type == ("cuda" if accelerator == "gpu" else "cpu")
    metrics = cli.trainer.callback_metrics
    assert metrics, "nothing was logged"
    bad = {k: float(v) for k, v in metrics.items() if not torch.isfinite(v).all()}
    assert not bad, f"non-finite metrics under {precision} with {extra}: {bad}"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("config", ["cifar_cnn", "cifar_resnet"])
def test_cifar_classifiers(config, precision, cifar_folder, tmp_path):
    fit(tmp_path, config, precision, "--data.data_dir", str(cifar_folder),
        "--data.val_size", "10", "--data.batch_size", "16")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("config,data", [("vae_mnist", "MNIST"), ("dcgan_fashion_mnist", "FashionMNIST")])
def test_generative_models(config, data, precision, tmp_path):
    make_raw(tmp_path / "data", data, gz=False, n_train=24, n_test=8)
    fit(tmp_path, config, precision, "--data.data_dir", str(tmp_path / "data"),
        "--data.val_size", "8", "--data.batch_size", "8")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_pix2pix(precision, ab_data, tmp_path):  # noqa: F811
    fit(tmp_path, "pix2pix_people_cpu", precision, "--data.data_dir", str(ab_data),
        "--data.folder", "pairs", "--data.load_size", "40", "--data.crop_size", "32", "--model.image_size", "32",
        "--model.gen_width", "4", "--model.disc_width", "4")


@pytest.mark.parametrize("cell", ["lstm", "gru"])  # oneDNN has no bf16 LSTM/GRU on CPUs without bf16: fp32 there
@pytest.mark.parametrize("precision", PRECISIONS)
def test_char_lstm(precision, cell, text_file, tmp_path):  # noqa: F811
    fit(tmp_path, "lstm_tinyshakespeare_cpu", precision, "--data.init_args.path", str(text_file),
        "--data.init_args.batch_size", "2", "--data.init_args.seq_len", "32", "--model.init_args.cell", cell,
        *[f"--model.init_args.{k}={v}" for k, v in TINY.items()])


@pytest.mark.parametrize("precision", PRECISIONS)
def test_forecaster(precision, csv_file, tmp_path):  # noqa: F811
    fit(tmp_path, "lstm_airline", precision, "--data.init_args.path", str(csv_file), "--model.init_args.cell", "gru")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_efficientnet_frozen_then_unfrozen(precision, image_root, tmp_path):  # noqa: F811
    """Epoch 0 on cached backbone features, epoch 1 on images through the whole net."""
    fit(tmp_path, "efficientnet_hymenoptera", precision, "--trainer.fast_dev_run", "false",
        "--trainer.max_epochs", "2", "--model.init_args.pretrained", "false", "--model.init_args.image_size", "32",
        "--model.init_args.unfreeze_at_epoch", "1", "--data.init_args.folder", "tiny", "--data.init_args.data_dir",
        str(image_root), "--data.init_args.batch_size", "4")


# ------------------------------------------------------------------------------------------- --precision auto
# The choice is tested on both kinds of CPU by faking the capability (/proc/cpuinfo's fields) and the timings
# (an injected measure function); no test asserts a real timing.

ZEN1 = {"model name": "AMD EPYC 7551 32-Core Processor", "flags": "fpu sse4_2 avx avx2 fma sha_ni"}
SAPPHIRE_RAPIDS = {"model name": "Intel(R) Xeon(R) Platinum 8480+",
                   "flags": "fpu sse4_2 avx avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"}


@pytest.fixture(params=[ZEN1, SAPPHIRE_RAPIDS], ids=["zen1", "sapphire_rapids"])
def fake_cpu(request, monkeypatch):
    monkeypatch.setattr(precision, "_cpuinfo", lambda: request.param)
    return request.param


def fake_measure(times: dict[str, float], finite: dict[str, bool] | None = None, calls: list | None = None):
    """A measure function returning ``times[arm.name]`` seconds per step (calibration: 1 ms per row)."""
    def measure(workload, arm, batch_size, budget_s=1.0):
        if calls is not None:
            calls.append((arm, batch_size, budget_s))
        if budget_s == 0.0:  # the batch calibration
            return Measurement(1e-3 * batch_size, 0.0, True)
        return Measurement(times[arm.name], 0.5, (finite or {}).get(arm.name, True))
    return measure


def cifar_cnn() -> Workload:
    return Workload.from_registry("cifar_cnn", batch_size=64)


def test_the_capability_comes_from_the_cpu_flags(fake_cpu):
    assert precision.cpu_has_bf16() == (fake_cpu is SAPPHIRE_RAPIDS)
    assert precision.cpu_model() == fake_cpu["model name"]
    assert ("Platinum-8480" if fake_cpu is SAPPHIRE_RAPIDS else "EPYC-7551") in precision.machine_key()  # cache folder


def test_without_native_bf16_the_bf16_arm_is_never_run(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    calls = []
    result = probe(cifar_cnn(), measure=fake_measure({"32-true": 1.0, "32-true+channels_last": 0.95}, calls=calls))
    assert calls and all(arm.precision == "32-true" for arm, *_ in calls)
    assert choose(result.arms).arm == FP32  # channels_last's 1.05x is inside the margin


@pytest.mark.parametrize("bf16_s,expected", [(0.5, "bf16-mixed"), (0.95, "32-true"), (1.4, "32-true")])
def test_bf16_is_picked_only_beyond_the_margin(monkeypatch, bf16_s, expected):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    times = {"32-true": 1.0, "32-true+channels_last": 1.0, "bf16-mixed": bf16_s, "bf16-mixed+channels_last": 2.0}
    choice = choose(probe(cifar_cnn(), measure=fake_measure(times)).arms)
    assert choice.arm == Arm(expected)
    assert choice.speedup == pytest.approx(1.0 / times[choice.arm.name])


def test_bf16_with_a_non_finite_loss_is_rejected(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    times = {"32-true": 1.0, "32-true+channels_last": 1.0, "bf16-mixed": 0.3, "bf16-mixed+channels_last": 0.3}
    result = probe(cifar_cnn(), measure=fake_measure(times, finite={"bf16-mixed": False,
                                                                    "bf16-mixed+channels_last": False}))
    choice = choose(result.arms)
    assert choice.arm == FP32 and "non-finite" in choice.reason


def test_channels_last_and_bf16_combine():
    arms = {FP32: Measurement(1.0, 0, True), Arm(channels_last=True): Measurement(0.8, 0, True),
            Arm("bf16-mixed"): Measurement(0.7, 0, True), Arm("bf16-mixed", True): Measurement(0.5, 0, True)}
    assert choose(arms).arm == Arm("bf16-mixed", True)
    arms[Arm("bf16-mixed", True)] = Measurement(0.75, 0, True)  # channels_last slower in bf16: plain bf16
    assert choose(arms).arm == Arm("bf16-mixed")  # 0.8 / 0.7 = 1.14x over fp32 channels_last


def test_compile_only_when_it_pays_back_within_the_run():
    arms = {FP32: Measurement(1.0, 2.0, True), Arm(compile=True): Measurement(0.5, 52.0, True)}  # 50 s to save 0.5 s
    assert choose(arms, steps=None).arm == FP32  # run length unknown: never
    assert choose(arms, steps=150).arm == FP32  # pays back after 100 steps: not twice within 150
    assert choose(arms, steps=200).arm == Arm(compile=True)


def test_a_cache_hit_does_not_measure_again(monkeypatch, isolated_cache):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    times = {"32-true": 1.0, "32-true+channels_last": 0.5}
    first = probe(cifar_cnn(), measure=fake_measure(times))
    calls = []
    second = probe(cifar_cnn(), measure=fake_measure(times, calls=calls))
    assert not calls and second.cached and not first.cached
    assert second.arms == first.arms and second.batch_size == first.batch_size == 64
    assert first.path.is_relative_to(isolated_cache / "precision")  # conftest's per-test ZOO_CACHE
    assert probe(cifar_cnn(), refresh=True, measure=fake_measure(times, calls=calls)) and calls


def test_another_cpu_measures_again(monkeypatch):
    times = {"32-true": 1.0, "32-true+channels_last": 1.0, "bf16-mixed": 0.5, "bf16-mixed+channels_last": 0.5}
    monkeypatch.setattr(precision, "_cpuinfo", lambda: ZEN1)
    assert choose(probe(cifar_cnn(), measure=fake_measure(times)).arms).arm == FP32
    monkeypatch.setattr(precision, "_cpuinfo", lambda: SAPPHIRE_RAPIDS)
    result = probe(cifar_cnn(), measure=fake_measure(times))
    assert not result.cached and choose(result.arms).arm == Arm("bf16-mixed")


@pytest.mark.parametrize("damage", [b"", b"{not json", b'{"version": 1}', b'{"version": 1, "workload": "x"}', b"[]"])
def test_a_damaged_cache_is_measured_again(monkeypatch, damage):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    times = {"32-true": 1.0, "32-true+channels_last": 0.5}
    path = probe(cifar_cnn(), measure=fake_measure(times)).path
    path.write_bytes(damage)
    calls = []
    result = probe(cifar_cnn(), measure=fake_measure(times, calls=calls))
    assert calls and not result.cached and result.note.startswith("re-measured")
    assert probe(cifar_cnn(), measure=fake_measure(times)).cached  # rewritten whole


def test_the_probe_leaves_the_random_state_alone():
    import random

    torch.manual_seed(5)
    random.seed(5)
    expected = torch.rand(3), random.random()
    torch.manual_seed(5)
    random.seed(5)
    precision.measure_arm(Workload.from_registry("cifar_cnn"), FP32, 2, warmup=1, min_steps=1, budget_s=0.0)
    assert torch.equal(torch.rand(3), expected[0]) and random.random() == expected[1]


def test_every_family_gets_a_finite_real_measurement():
    """The real measure function runs each registry family's tiny instance (no timing is asserted)."""
    import zoo

    for name in zoo.list_models():
        entry = zoo.model_entry(name)
        workload = Workload(name, entry.cls, {**entry.fixed, **entry.tiny}, 2)
        m = precision.measure_arm(workload, Arm(channels_last=workload.has_channels_last), 2, warmup=1,
                                  min_steps=1, budget_s=0.0)
        assert m.step_s > 0 and m.finite, name


def auto_cli(tmp_path, *extra: str):
    return ZooCLI(args=["--config", str(CONFIGS / "cifar_cnn.yaml"), "--precision", "auto",
                        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                        "--trainer.default_root_dir", str(tmp_path / "run"), *extra], run=False)


def test_cli_precision_auto_sets_the_trainer_and_the_model(fake_cpu, monkeypatch, tmp_path, capsys):
    times = {"32-true": 1.0, "32-true+channels_last": 0.8, "bf16-mixed": 0.6, "bf16-mixed+channels_last": 0.4}
    monkeypatch.setattr(precision, "measure_arm", fake_measure(times))
    cli = auto_cli(tmp_path)
    line = [ln for ln in capsys.readouterr().err.splitlines() if "--precision auto" in ln]
    if fake_cpu is SAPPHIRE_RAPIDS:
        assert cli.trainer.precision == "bf16-mixed" and cli.model.hparams.channels_last
        assert line and "-> bf16-mixed+channels_last (2.50x 32-true on Intel(R) Xeon(R)" in line[0]
    else:
        assert cli.trainer.precision == "32-true" and cli.model.hparams.channels_last
        assert line and "-> 32-true+channels_last (1.25x" in line[0] and "no native bf16" in line[0]
    assert len(line) == 1 and "measured now" in line[0]
    auto_cli(tmp_path)
    assert "cached" in capsys.readouterr().err


def test_cli_precision_auto_trains(cifar_folder, tmp_path, capsys):
    """A real probe, then two training steps with what it picked."""
    cli = auto_cli(tmp_path, "--data.data_dir", str(cifar_folder), "--data.val_size", "10", "--data.batch_size", "16",
                   "--trainer.fast_dev_run", "2")
    assert cli.trainer.precision in ("32-true", "bf16-mixed")
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert all(torch.isfinite(v).all() for v in cli.trainer.callback_metrics.values())
    assert f"--precision auto -> {cli.trainer.precision}" in capsys.readouterr().err


def test_cli_precision_accepts_only_auto(capsys):
    from zoo.cli import main

    with pytest.raises(SystemExit) as done:
        main(["fit", "--config", str(CONFIGS / "cifar_cnn.yaml"), "--precision", "bf16", "--print_config"])
    assert done.value.code != 0 and "'auto'" in capsys.readouterr().err


def test_cli_compiles_only_from_a_measurement_that_pays_back(monkeypatch, tmp_path, capsys):
    """The CLI's own probe never compiles (tens of seconds); a probe with compile=True (benchmarks/precision_auto.py)
    leaves a measurement it uses when the run's max_steps is long enough: 25 s to compile, 0.5 s saved per step."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    times = {"32-true": 1.0, "32-true+channels_last": 1.0, "32-true+compile": 0.5}
    monkeypatch.setattr(precision, "measure_arm", lambda w, arm, b, budget_s=1.0: Measurement(
        times[arm.name] if budget_s else 1e-3 * b, 25.0 * arm.compile, True))
    cfg = auto_cli(tmp_path).config
    assert not any(a.compile for a in probe(Workload.from_config(cfg)).arms)
    probe(Workload.from_config(cfg), compile=True)
    capsys.readouterr()
    assert not any(isinstance(cb, precision.CompileModules) for cb in auto_cli(tmp_path).trainer.callbacks)
    assert "compile 2.00x, pays back after 50 steps (run length unknown)" in capsys.readouterr().err
    cli = auto_cli(tmp_path, "--trainer.max_steps", "100")
    assert any(isinstance(cb, precision.CompileModules) for cb in cli.trainer.callbacks)
    assert "-> 32-true+compile (2.00x" in capsys.readouterr().err


def test_auto_on_a_cpu_picks_only_cpu_precisions_and_on_a_gpu_does_not_measure(monkeypatch):
    from jsonargparse import Namespace

    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert {a.precision for a in precision.candidate_arms(cifar_cnn())} == {"32-true", "bf16-mixed"}
    monkeypatch.setattr(precision, "probe", lambda *a, **k: pytest.fail("a GPU run must not probe the CPU"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for bf16, expected in [(True, "bf16-mixed"), (False, "16-mixed")]:
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda bf16=bf16: bf16)
        cfg = Namespace(precision="auto", trainer=Namespace(accelerator="gpu", precision=None))
        precision.resolve_auto_precision(cfg, log=lambda _: None)
        assert cfg.trainer.precision == expected


def test_a_model_that_does_not_compile_is_measured_eagerly(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    measure = fake_measure({"32-true": 1.0, "32-true+channels_last": 1.0})

    def failing(workload, arm, batch_size, budget_s=1.0):
        if arm.compile:
            raise RuntimeError("dynamo: unsupported\nmore lines")
        return measure(workload, arm, batch_size, budget_s)

    lines = []
    result = probe(cifar_cnn(), compile=True, measure=failing, log=lines.append)
    assert not any(a.compile for a in result.arms) and choose(result.arms).arm == FP32
    assert "torch.compile failed (RuntimeError: dynamo: unsupported)" in lines[-1]
