"""The overhead benchmark compares like with like: every arm trains the same model on the same batches."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import benchmark_script

import zoo

overhead = benchmark_script("overhead")


@pytest.fixture
def short_tiny_run(monkeypatch):
    reg, kwargs, batch, _ = overhead.NETS["tiny"]
    monkeypatch.setitem(overhead.NETS, "tiny", (reg, {**kwargs, "dropout": 0.0}, batch, overhead.WARMUP + 3))


@pytest.mark.filterwarnings("ignore")
def test_overhead_arms_train_the_same_weights(short_tiny_run):
    """If an arm did other work (another loss, schedule or optimizer), its step-time ratio would not measure overhead."""
    results = {
        "hand": overhead.hand("tiny"),
        "lightning": overhead.with_trainer("tiny", False, bare=True),
        "zoo": overhead.with_trainer("tiny", False),
        "zoo_default": overhead.with_trainer("tiny", True),
    }
    reference = results["hand"][1].state_dict()
    start = overhead.make("tiny")[0].state_dict()
    assert any(not torch.equal(start[k], v) for k, v in reference.items()), "the hand arm did not train"
    for arm, (seconds, model) in results.items():
        assert 0 < seconds < float("inf"), arm
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, reference[k], msg=f"{arm}: {k} differs from the hand-written loop's")


@pytest.mark.parametrize("script", ["export_parity", "startup", "quantize_lstm", "pruning", "faults", "newcomer", "plots",
                                    "flagship_vs_peer", "callbacks_ablation"])
def test_benchmark_scripts_import(script):
    """The scripts the README quotes import cleanly (an import error fails here, not when someone runs them)."""
    assert callable(benchmark_script(script).main)


@pytest.mark.parametrize("script", ["precision_auto", "share_of_peak"])
def test_precision_and_peak_scripts_import(script):
    benchmark_script("precision_auto")  # share_of_peak imports its family list
    assert callable(benchmark_script(script).main)


def test_every_family_of_the_precision_benchmarks_builds_from_its_config():
    """The families are the configs' models as ``zoo fit`` builds them (--precision auto's cache entries)."""
    bench = benchmark_script("precision_auto")
    names = set()
    for label in bench.FAMILIES:
        workload, _ = bench.family_workload(label)
        model = workload.model()
        batch = workload.batch(model, 3)
        assert all(len(t) == 3 for t in batch), label
        assert not workload.init_args.get("pretrained"), label  # a probe never downloads
        names.add(workload.name)
    assert {"EfficientNetClassifier (frozen)", "EfficientNetClassifier (unfrozen)"} <= names


def test_share_of_peak_counts_grouped_convolutions_and_lstms_once():
    """A step costs forward + grad_input + grad_weight = 3x the forward, also for depthwise convolutions (torch's own
    formula counts their grad_weight ``groups`` times) and oneDNN's LSTM (which torch's counter does not know)."""
    from torch.utils.flop_counter import FlopCounterMode

    benchmark_script("precision_auto")
    formulas = benchmark_script("share_of_peak").FLOP_FORMULAS
    conv, x = torch.nn.Conv2d(8, 8, 3, groups=8, bias=False), torch.randn(2, 8, 6, 6, requires_grad=True)
    lstm, seq = torch.nn.LSTM(4, 8, batch_first=True), torch.randn(2, 5, 4, requires_grad=True)
    for net, inp, forward in [(conv, x, 2 * 2 * 8 * 4 * 4 * 9), (lstm, seq, 2 * 2 * 5 * (32 * 4 + 32 * 8))]:
        with FlopCounterMode(display=False, custom_mapping=formulas) as counter:
            out = net(inp)
            (out[0] if isinstance(out, tuple) else out).sum().backward()
        assert counter.get_total_flops() == 3 * forward, type(net).__name__


AIRBENCH_TABLE = """\
------------------------------------------------------------------------------------------------------
|  run     |  epoch  |  train_loss  |  train_acc  |  val_acc  |  tta_val_acc  |  total_time_seconds  |
------------------------------------------------------------------------------------------------------
|       0  |      0  |      1.4721  |     0.5020  |   0.6509  |               |            210.1234  |
|          |      1  |      1.3000  |     0.5900  |   0.6814  |               |            420.5000  |
|          |   eval  |      1.2000  |     0.6100  |   0.6814  |       0.6900  |            430.0000  |
------------------------------------------------------------------------------------------------------
"""


def test_the_peer_curve_is_read_from_airbench_table(tmp_path):
    """The side-by-side table quotes the peer's own printout: its per-epoch test accuracy and its TTA result."""
    bench = benchmark_script("flagship_vs_peer")
    log = tmp_path / "peer.log"
    with pytest.raises(SystemExit, match="peer.log: no such file"):
        bench.main([str(tmp_path), str(log)])
    log.write_text("Files already downloaded\n" + AIRBENCH_TABLE + "Mean: 0.6900    Std: nan\n")
    assert bench.peer_curve(log) == ([0.6509, 0.6814], 0.69)
    log.write_text(AIRBENCH_TABLE.split("|          |   eval")[0])  # killed before its final TTA evaluation
    with pytest.raises(SystemExit, match="no finished airbench94 table"):
        bench.peer_curve(log)


def test_callback_ablation_halves_merge_into_one_verdict(tmp_path, capsys):
    """Two halves of the ablation run side by side (one seed each) give the same table as one run of both seeds."""
    bench = benchmark_script("callbacks_ablation")
    config = {"student": "cifar_cnn", "epochs": 30, "limit": None, "precision": "bf16-mixed"}
    halves = {0: {"baseline": 0.800, "mixup": 0.812, "ema": 0.801}, 1: {"baseline": 0.802, "mixup": 0.815, "ema": 0.799}}
    files = []
    for seed, accs in halves.items():
        files.append(tmp_path / f"seed{seed}.json")
        runs = [{"variant": v, "seed": seed, "test_acc": a, "seconds": 1.0} for v, a in accs.items()]
        files[-1].write_text(json.dumps({"config": {**config, "seeds": [seed]}, "summary": [], "runs": runs}))
    out = tmp_path / "merged.json"
    assert bench.main(["--merge", *map(str, files), "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert merged["config"]["seeds"] == [0, 1] and len(merged["runs"]) == 6
    verdicts = {r["variant"]: r.get("verdict") for r in merged["summary"]}
    assert verdicts == {"baseline": None, "mixup": "helps", "ema": "no measurable effect at this budget"}
    assert "| mixup | 81.35 ± 0.21 % | +1.25 pt | 2 | helps |" in capsys.readouterr().out


def test_callbacks_ablation_trains_on_the_chosen_subset(cifar_folder, tmp_path, capsys):
    """--train-size: every variant sees the same class-balanced subset (the data-limited tables' regime);
    --schedule overrides the student's LR schedule."""
    bench = benchmark_script("callbacks_ablation")
    out = tmp_path / "subset.json"
    assert bench.main(["--data-dir", str(cifar_folder), "--train-size", "20", "--val-size", "10", "--epochs", "1",
                       "--seeds", "0", "--variants", "baseline", "--batch-size", "8", "--accelerator", "cpu",
                       "--schedule", "constant", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["train_size"] == 20 and 0 <= result["runs"][0]["test_acc"] <= 1
    assert "cifar_cnn, 1 epochs, 20 training images, constant LR, seeds [0]" in capsys.readouterr().out


def test_efficientnet_tta_scores_each_run_and_their_soup(image_root, tmp_path, capsys):
    """The hymenoptera TTA/soup table: a count per TTA level and size for each run; the soup's weights are the mean."""
    bench = benchmark_script("efficientnet_tta")
    paths, nets = [], []
    for seed in (0, 1):
        torch.manual_seed(seed)
        net = zoo.get_model("efficientnet_lite0", pretrained=False, num_classes=2, image_size=32)
        paths.append(tmp_path / f"run{seed}.ckpt")
        hparams = {**net.hparams, "_class_path": "zoo.efficientnet.EfficientNetClassifier"}
        torch.save({"state_dict": net.state_dict(), "hyper_parameters": hparams}, paths[-1])
        nets.append(net)
    soup = bench.soup(nets)
    torch.testing.assert_close(soup.head[1].weight, (nets[0].head[1].weight + nets[1].head[1].weight) / 2)
    out = tmp_path / "tta.json"
    assert bench.main([*map(str, paths), "--data-dir", str(image_root), "--split", "tiny/val", "--larger", "8",
                       "--soup", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["model"] for r in rows] == [*map(str, paths), "soup of 2"]
    for r in rows:
        counts = [r[f"{s}px_tta{t}"] for s in (32, 40) for t in (0, 1, 2)] + [r["multiscale_tta1"]]
        assert all(0 <= c <= 6 for c in counts) and r["images"] == 6
        assert len(r["wrong_tta1"]) == 6 - r["32px_tta1"]
    assert "| soup of 2 | 32 |" in capsys.readouterr().out
    assert bench.main([str(paths[0]), "--data-dir", str(tmp_path / "nowhere")]) == 2


def test_vae_refine_scores_each_setting_on_the_same_draws(mnist_dir, tmp_path, capsys):
    """Every setting scores the same val images; the same setting twice gives the same number (seeded z draws)."""
    bench = benchmark_script("vae_refine")
    torch.manual_seed(0)
    net = zoo.get_model("vae", latent_dim=4, widths=[8, 16], hidden=32)
    ckpt = tmp_path / "vae.ckpt"
    torch.save({"state_dict": net.state_dict(), "hyper_parameters": {**net.hparams, "_class_path": "zoo.vae.VAE"}},
               ckpt)
    out = tmp_path / "refine.json"
    assert bench.main([str(ckpt), "--data-dir", str(mnist_dir), "--val-size", "10", "--batch-size", "4",
                       "--settings", "0", "5@0.05", "5@0.05", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["steps"] for r in rows] == [0, 5, 5] and rows[1]["val_nelbo"] == rows[2]["val_nelbo"]
    x = torch.cat(bench.val_batches(str(mnist_dir), 4, None, 10))
    assert len(x) == 10 and rows[0]["val_nelbo"] > 0
    assert "| 5 | 0.05 |" in capsys.readouterr().out
