"""The checkpoint format: export -> load round trip, URLs, init-from, and every kind of bad input."""

import functools
import http.server
import json
import threading

import pytest
import torch

import zoo
from zoo import hub
from zoo.cli import main
from zoo.hub import CheckpointError


def test_export_then_load_gives_identical_outputs(run_ckpt, exported):
    card = json.loads(exported.read_text())
    assert card["model"] == "cifar_cnn" and card["hparams"]["num_classes"] == 10
    assert card["weights"]["sha256"] == hub.sha256(exported.with_suffix(".safetensors"))
    assert 0.0 <= card["metrics"]["test/acc"] <= 1.0 and card["preprocessing"]["mean"] and card["licence"]
    assert card["zoo_version"] == zoo.__version__ and card["training_config"]["model"]
    x = torch.randn(3, 3, 32, 32)
    from_ckpt, from_card = zoo.load(run_ckpt), zoo.load(exported)
    assert not from_card.training
    torch.testing.assert_close(from_card(x), from_ckpt(x), rtol=0, atol=0)
    assert isinstance(zoo.model_entry("cifar_cnn").cls.from_pretrained(str(exported)), torch.nn.Module)


def test_export_set_changes_how_the_weights_are_used_never_their_shapes(run_ckpt, tmp_path, capsys):
    """``zoo export --set tta=2``: the card holds the trained weights with the new argument, and says so."""
    out = tmp_path / "published"
    assert main(["export", str(run_ckpt), "--name", "tta2", "--out", str(out), "--no-test", "--set", "tta=2"]) == 0
    card = json.loads((out / "tta2.json").read_text())
    assert card["hparams"]["tta"] == 2 and card["export_hparams"] == {"tta": 2}
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(zoo.load(out / "tta2.json")(x), zoo.load(run_ckpt)(x), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="wrong shapes"):
        hub.export(run_ckpt, "eleven", out, test=False, hparams={"num_classes": 11})
    assert not (out / "eleven.json").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run_ckpt), "--name", "bad", "--out", str(out), "--set", "tta"])
    assert exit_info.value.code == 2 and "expected KEY=VALUE" in capsys.readouterr().err


def test_a_card_can_be_recarded_with_new_settings_sharing_its_weights(exported, tmp_path, capsys):
    """``zoo export CARD --set ...``: same weights (one file, same sha256), new settings, its own measured metrics."""
    assert main(["export", str(exported), "--name", "tiny_cnn_tta2", "--out", str(exported.parent), "--set", "tta=2"]) == 0
    card, source = (json.loads(p.read_text()) for p in (exported.parent / "tiny_cnn_tta2.json", exported))
    assert card["weights"] == source["weights"] and not (exported.parent / "tiny_cnn_tta2.safetensors").exists()
    assert card["derived_from"] == "tiny_cnn" and card["training_config"] == source["training_config"]
    assert card["hparams"]["tta"] == 2 and 0 <= card["metrics"]["test/acc"] <= 1
    capsys.readouterr()
    assert main(["evaluate", str(exported.parent / "tiny_cnn_tta2.json")]) == 0
    assert "+0.0000" in capsys.readouterr().out
    elsewhere = hub.export(exported, "copy", tmp_path / "elsewhere", test=False, hparams={"tta": 1})
    assert json.loads(elsewhere.read_text())["weights"]["sha256"] == source["weights"]["sha256"]
    assert elsewhere.with_suffix(".safetensors").is_file()  # another folder: a copy, verified by the same sha256


def test_evaluate_reproduces_the_card(exported, capsys):
    assert main(["evaluate", str(exported)]) == 0
    out = capsys.readouterr().out
    assert "test/acc" in out and "+0.0000" in out


@pytest.fixture
def server(exported):
    folder = exported.parent
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", folder
    httpd.shutdown()
    httpd.server_close()


def test_load_from_http_url_caches_verified_files(server, isolated_cache):
    url, folder = server
    model = zoo.load(f"{url}/tiny_cnn.json")
    cached = sorted(p.name for p in (isolated_cache / "hub").rglob("*") if p.is_file())
    assert cached == ["tiny_cnn.json", "tiny_cnn.safetensors"]
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(model(x), zoo.load(folder / "tiny_cnn.json")(x))


def test_corrupt_download_is_refused_and_not_cached(server, isolated_cache):
    url, folder = server
    weights = folder / "tiny_cnn.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="sha256"):
        zoo.load(f"{url}/tiny_cnn.json")
    leftovers = [p.name for p in (isolated_cache / "hub").rglob("*.safetensors*")]
    assert leftovers == [], "a corrupt or partial file was left in the cache"


def test_file_url(exported):
    assert zoo.load(exported.as_uri()).hparams.num_classes == 10


def test_local_file_with_wrong_sha_is_refused(exported):
    weights = exported.with_suffix(".safetensors")
    weights.write_bytes(weights.read_bytes() + b" ")
    with pytest.raises(CheckpointError, match=f"{weights.name}.*sha256"):
        zoo.load(exported)


def test_truncated_weights_are_named(exported, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(exported.with_suffix(".safetensors").read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="bad.safetensors.*truncated"):
        hub.read_weights(bad)
    card = json.loads(exported.read_text())
    card["weights"].update(file="bad.safetensors", sha256=hub.sha256(bad))
    (tmp_path / "bad.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        zoo.load(tmp_path / "bad.json")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        return (open, (self.marker, "w"))


def test_pickle_carrying_code_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}, "x": _Payload(str(marker))}, evil)
    with pytest.raises(CheckpointError, match="evil.ckpt.*weights_only"):
        zoo.load(evil)
    assert not marker.exists()


def test_card_naming_an_unknown_model(exported):
    card = json.loads(exported.read_text())
    card["model"] = "os.system"
    exported.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="Unknown model 'os.system'"):
        zoo.load(exported)


def test_wrong_tensor_shapes_are_named(exported):
    card = json.loads(exported.read_text())
    card["hparams"]["num_classes"] = 5
    exported.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match=r"net.14.weight: checkpoint \(10, 500\) vs model \(5, 500\)"):
        zoo.load(exported)


def test_override_num_classes_reinitialises_only_the_head(exported):
    base = zoo.load(exported)
    with pytest.warns(UserWarning, match="re-initialising"):
        five = zoo.load(exported, num_classes=5)
    assert five.net[-1].out_features == 5
    torch.testing.assert_close(five.net[0].weight, base.net[0].weight)


def test_init_from_copies_weights_at_fit_setup(exported):
    source = zoo.load(exported)
    fresh = zoo.get_model("cifar_cnn", init_from=str(exported))
    assert not torch.equal(fresh.net[0].weight, source.net[0].weight)
    fresh.setup("fit")
    torch.testing.assert_close(fresh.net[0].weight, source.net[0].weight)
    assert "init_from" not in fresh.hparams  # a rebuilt checkpoint never re-fetches its starting point


def test_unknown_source_lists_the_options(tmp_path):
    with pytest.raises(CheckpointError, match="not a published name"):
        zoo.load(tmp_path / "nothing.safetensors")


def test_published_checkpoints_have_valid_cards():
    for name, card in hub.published().items():
        assert card["name"] == name and card["model"] in zoo.list_models()
        assert (hub.PUBLISHED_DIR / card["weights"]["file"]).is_file() or card["weights"]["url"]
        assert card["metrics"] and card["metrics_command"].startswith("zoo evaluate")


def test_evaluate_add_missing_writes_the_metrics_a_published_card_lacks(teacher_card, monkeypatch, capsys):
    """`zoo evaluate NAME --add-missing`: an older card gains the metrics its test now logs (macro-F1, per-class
    accuracy, ...), measured from its own weights; a second run finds nothing to add and reproduces them all."""
    import json

    from zoo import hub
    from zoo.cli import main

    monkeypatch.setattr(hub, "PUBLISHED_DIR", teacher_card.parent)
    card = json.loads(teacher_card.read_text())
    card["metrics"] = {}
    teacher_card.write_text(json.dumps(card))
    assert main(["evaluate", "teacher", "--add-missing"]) == 0
    metrics = json.loads(teacher_card.read_text())["metrics"]
    assert {"test/acc", "test/f1_macro", "test/auroc", "test/acc_airplane"} <= metrics.keys()
    capsys.readouterr()
    assert main(["evaluate", "teacher", "--add-missing"]) == 0
    out = capsys.readouterr().out
    assert "added" not in out and "test/f1_macro" in out
