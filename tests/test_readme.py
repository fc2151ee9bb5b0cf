"""The README's commands work as written: its Python blocks run, its `zoo` lines parse, and the newcomer's sequence
(train a few steps, fast_dev_run, resume, test, export, evaluate) runs on the real data (skipped without it)."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA
from zoo.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", README, flags=re.S)


def zoo_lines() -> list[list[str]]:
    """Every `zoo ...` command of the README's bash blocks, comments and line continuations removed."""
    lines = []
    for lang, body in BLOCKS:
        if lang != "bash":
            continue
        for line in body.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["zoo"] and "..." not in line and "<" not in line:
                lines.append(words[1:])
    return lines


def test_python_blocks_run(tmp_path):
    for lang, body in BLOCKS:
        if lang == "python":
            run = subprocess.run([sys.executable, "-c", body], capture_output=True, text=True, cwd=tmp_path,
                                 timeout=300)
            assert run.returncode == 0, body + run.stderr[-2000:]


@pytest.mark.parametrize("args", [a for a in zoo_lines() if a[:1] in (["fit"], ["test"]) and "--ckpt_path" not in a],
                         ids=" ".join)
def test_lightning_lines_parse(args, capsys):
    """fit/test lines parse to a full config (models, options, config files and presets all valid); the lines that
    resume a run's last.ckpt run for real in test_newcomer_sequence_on_real_data."""
    with pytest.raises(SystemExit) as done:
        main([*args, "--print_config"])
    assert done.value.code in (0, None), capsys.readouterr().err
    assert "class_path" in capsys.readouterr().out


def test_every_command_is_known():
    names = {a[0] for a in zoo_lines() if a}
    assert names <= {"fit", "test", "list", "export", "evaluate", "quantize", "serve"}, names


# torch deprecates TorchScript and torch.ao quantisation (both still work; see tests/test_export.py for why they stay).
@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:FutureWarning")
@pytest.mark.filterwarnings(r"ignore:torch\.ao\.quantization is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings(r"ignore:torch\.quantize_per_tensor, torch\.quantize_per_channel:UserWarning")
@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"needs the real data in {SHARED_DATA}")
def test_newcomer_sequence_on_real_data(tmp_path, monkeypatch):
    """The README's "Train a config for a few steps" and the run-folder commands of "Usage", in order."""
    monkeypatch.setenv("ZOO_DATA_DIR", str(SHARED_DATA))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    lines = [a for a in zoo_lines() if "configs/cifar_cnn.yaml" in a or a[:1] == ["export"]]
    few_steps = [a for a in lines if a[0] == "fit" and ("--trainer.max_steps" in a or "--trainer.fast_dev_run" in a)]
    assert len(few_steps) == 3
    for args in few_steps:
        assert main(args) == 0, args
    last = tmp_path / "runs" / "cifar_cnn" / "version_0" / "checkpoints" / "last.ckpt"
    import torch

    assert torch.load(last, weights_only=True, map_location="cpu")["global_step"] == 40  # resumed from 20 to 40
    (test_line,) = [a for a in lines if a[0] == "test"]
    assert main(test_line) == 0
    (export_line,) = [a for a in lines if a[0] == "export" and a[1].startswith("runs/")]
    assert main(export_line) == 0
    card = json.loads((tmp_path / "published" / "my_net.json").read_text())
    assert card["model"] == "cifar_cnn" and 0.1 < card["metrics"]["test/acc"] < 1
    assert main(export_line) == 2  # an existing export is not replaced without --force
    assert main(["evaluate", str(tmp_path / "published" / "my_net.json")]) == 0
    outside = [a for a in zoo_lines() if a[0] in ("export", "quantize") and not a[1].startswith("runs/")]
    ensemble = [a for a in zoo_lines() if a[0] == "evaluate" and "+" in a[1]]
    assert len(ensemble) == 1  # run by tests/test_ensembles.py on tiny data (the full test set takes minutes)
    assert len(outside) == 4
    for args in outside:  # "Take a model out of Python": each writes and verifies its file
        assert main(args) == 0, args
    assert len(list((tmp_path / "published").glob("*"))) == 2 + 4
