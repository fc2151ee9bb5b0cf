"""Pseudo-labelling (datamodules/pseudo_labels.py, `zoo pseudo-label`): a teacher labels the unlabelled pool, the
student trains on labelled + pseudo-labelled images; bad input gets one line."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from zoo.cli import main
from zoo.datamodules.cifar import CIFAR10DataModule


def test_teacher_labels_the_unlabelled_pool_and_a_student_trains_on_it(teacher_card, cifar_folder, tmp_path):
    out = tmp_path / "pseudo.safetensors"
    assert main(["pseudo-label", str(teacher_card), "--labelled", "20", "--val-size", "10", "--out", str(out)]) == 0
    labels = load_file(str(out))
    dm = CIFAR10DataModule(labelled=20, val_size=10)
    dm.setup()
    assert torch.equal(labels["indices"], dm.datasets["unlabelled"].labels)  # every unlabelled image, in order
    assert labels["probs"].shape == (30, 10) and torch.allclose(labels["probs"].sum(1), torch.ones(30))

    assert main(["fit", "--model", "CifarCNN", "--data", "CIFAR10DataModule", "--data.val_size", "10",
                 "--data.labelled", "20", "--data.pseudo_labels", str(out), "--data.batch_size", "8",
                 "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path / "student"),
                 "--trainer.enable_progress_bar", "false"]) == 0
    student = CIFAR10DataModule(labelled=20, val_size=10, pseudo_labels=str(out))
    student.setup()
    assert student.datasets["train"].labels.shape == (50, 10)  # 20 one-hot + 30 soft targets


def test_bad_pseudo_label_input_gets_one_line(teacher_card, tmp_path, capsys):
    assert main(["pseudo-label", str(teacher_card), "--labelled", "0", "--out", str(tmp_path / "p")]) == 2
    assert "--labelled must be > 0" in capsys.readouterr().err
    assert main(["fit", "--model", "CifarCNN", "--data", "CIFAR10DataModule", "--data.val_size", "10",
                 "--data.labelled", "20", "--data.pseudo_labels", str(tmp_path / "missing.safetensors"),
                 "--trainer.max_steps", "1", "--trainer.default_root_dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "zoo: error: No pseudo-label file" in err and "Traceback" not in err
