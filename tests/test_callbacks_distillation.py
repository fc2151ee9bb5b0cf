"""Distillation (callbacks/distillation.py): the KD loss by hand, and a frozen teacher loaded from a zoo card that
stays out of the student, its optimizer and its checkpoint."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_data, tiny_trainer

import zoo
from zoo.callbacks import Distillation, MixUpCutMix
from zoo.callbacks.distillation import kd_loss, kd_term, renormalize


def test_kd_loss_equals_a_hand_computation():
    s, t, y, T, a = torch.tensor([[1.0, 2.0, 0.0]]), torch.tensor([[0.0, 3.0, 1.0]]), torch.tensor([1]), 2.0, 0.7
    softmax = lambda v: [math.exp(e) / sum(math.exp(f) for f in v) for e in v]  # noqa: E731
    ps, pt = softmax([0.5, 1.0, 0.0]), softmax([0.0, 1.5, 0.5])  # logits / T
    kl = sum(q * math.log(q / p) for p, q in zip(ps, pt)) * T**2
    ce = -math.log(softmax([1.0, 2.0, 0.0])[1])
    assert kd_term(s, t, T).item() == pytest.approx(kl, rel=1e-6)
    assert kd_loss(s, t, y, T, a).item() == pytest.approx(a * kl + (1 - a) * ce, rel=1e-6)
    assert kd_term(t, t, T).item() == pytest.approx(0.0, abs=1e-7)
    x = torch.randn(2, 3, 4, 4)
    back = renormalize(renormalize(x, (0.5,) * 3, (0.2,) * 3, (0.1, 0.2, 0.3), (1, 2, 3)), (0.1, 0.2, 0.3), (1, 2, 3),
                       (0.5,) * 3, (0.2,) * 3)
    torch.testing.assert_close(back, x)


def test_distillation_keeps_the_teacher_frozen_and_out_of_the_student(teacher_card, cifar_folder, tmp_path):
    card = json.loads(teacher_card.read_text())
    card["preprocessing"]["mean"] = [0.5, 0.5, 0.5]  # a teacher trained with another normalisation
    teacher_card.write_text(json.dumps(card))
    kd, mix = Distillation(str(teacher_card), temperature=3.0, alpha=0.6), MixUpCutMix()
    student = zoo.get_model("cifar_cnn")
    trainer = tiny_trainer(tmp_path, [mix, kd], enable_checkpointing=True)
    trainer.fit(student, datamodule=tiny_data(cifar_folder))
    teacher = kd.teacher
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    torch.testing.assert_close(teacher.state_dict(), zoo.load(teacher_card).state_dict(), rtol=0, atol=0)
    in_optimizer = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not in_optimizer & {id(p) for p in teacher.parameters()}
    assert not any(m is teacher for m in student.modules())
    saved = torch.load(trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert set(saved["state_dict"]) == set(student.state_dict())
    assert "train/kd" in trainer.callback_metrics
    # The batch is re-standardised for the teacher: student mean/std -> (0.5, 0.5, 0.5)/its std.
    assert kd._renorm is not None and kd._renorm[2] == (0.5, 0.5, 0.5)
    # The hook blends the student's own loss; with the model's plain cross-entropy that is kd_loss.
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits, student.log = student(x), lambda *args, **kwargs: None  # outside a loop there is nowhere to log
    got = kd.training_loss(trainer, student, x, logits, y, F.cross_entropy(logits, y))
    torch.testing.assert_close(got, kd_loss(logits, kd.teacher_logits(x), y, 3.0, 0.6))
