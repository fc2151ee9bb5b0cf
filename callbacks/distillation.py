"""Knowledge distillation (Hinton et al., 2015) from any ``zoo.load`` source into a zoo classifier.

Usage (YAML, stacked after a model config):
    zoo fit --config configs/cifar_cnn.yaml --config configs/callbacks/distillation.yaml
    trainer = L.Trainer(callbacks=[Distillation("cifar_resnet_cifar10", temperature=4.0, alpha=0.9)])

The teacher lives on the callback, not on the LightningModule: it is never a submodule of the student, so it is not
in the optimizer's parameters, the student's checkpoint, an SWA/EMA copy of the student or the DDP wrapper. It is
frozen (``requires_grad=False``) and kept in eval mode. The loss replaces the student's through
``ImageClassifier.training_loss``: ``alpha * kd_term + (1 - alpha) * <the student's own loss>``.
"""

from __future__ import annotations

import warnings
from typing import Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F


def kd_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``F.kl_div(log_softmax(student/T), softmax(teacher/T), "batchmean") * T^2`` for logits (B, C).

    In F.kl_div's argument order (student, teacher), as the issue writes it; mathematically KL(p_teacher || p_student),
    Hinton's term. The T^2 keeps its gradient scale independent of T.
    """
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * temperature**2


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, temperature: float, alpha: float
) -> torch.Tensor:
    """``alpha * kd_term + (1 - alpha) * cross_entropy(student, targets)``; targets are ids (B,) or probabilities."""
    ce = F.cross_entropy(student_logits, targets)
    return alpha * kd_term(student_logits, teacher_logits, temperature) + (1 - alpha) * ce


def renormalize(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], to_mean: Sequence[float], to_std: Sequence[float]
) -> torch.Tensor:
    """Images (B, C, H, W) standardised with (mean, std) -> the same images standardised with (to_mean, to_std)."""
    view = lambda v: torch.as_tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)  # noqa: E731
    return (x * view(std) + view(mean) - view(to_mean)) / view(to_std)


class Distillation(L.Callback):
    """Adds a frozen teacher's soft targets to a zoo classifier's training loss.

    Args:
        teacher: any ``zoo.load`` source: a published name, a card/.safetensors path, a URL or a Lightning .ckpt.
        temperature: softmax temperature T of both teacher and student in the KD term.
        alpha: weight of the KD term; the student's own loss gets ``1 - alpha``.
        teacher_mean: per-channel mean the teacher's inputs are standardised with; default: its model card's.
        teacher_std: per-channel std likewise. The student's come from the DataModule's ``mean``/``std``; when the
            two differ, the batch is re-standardised for the teacher.
    """

    def __init__(
        self,
        teacher: str,
        temperature: float = 4.0,
        alpha: float = 0.9,
        teacher_mean: list[float] | None = None,
        teacher_std: list[float] | None = None,
    ):
        if temperature <= 0 or not 0 <= alpha <= 1:
            raise ValueError(f"Distillation: temperature must be > 0 and alpha in [0, 1]; got {temperature}, {alpha}.")
        self.source, self.temperature, self.alpha = str(teacher), temperature, alpha
        self.teacher_mean, self.teacher_std = teacher_mean, teacher_std
        self.teacher: torch.nn.Module | None = None
        self._renorm: tuple | None = None  # (student mean, std, teacher mean, std) when they differ

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or self.teacher is not None:
            return
        if not hasattr(pl_module, "training_loss"):
            raise TypeError(f"Distillation needs a zoo ImageClassifier (training_loss hook); got {type(pl_module)}.")
        import zoo

        self.teacher = zoo.load(self.source).eval().requires_grad_(False)
        prep = (getattr(self.teacher, "zoo_card", None) or {}).get("preprocessing", {})
        t_mean, t_std = self.teacher_mean or prep.get("mean"), self.teacher_std or prep.get("std")
        dm = trainer.datamodule
        s_mean, s_std = getattr(dm, "mean", None), getattr(dm, "std", None)
        if t_mean is None or t_std is None or s_mean is None or s_std is None:
            warnings.warn(
                f"Distillation: cannot compare input normalisations (teacher {t_mean}/{t_std}, student's DataModule "
                f"{s_mean}/{s_std}); assuming the teacher expects the student's. Pass teacher_mean/teacher_std if not."
            )
        elif list(t_mean) != list(s_mean) or list(t_std) != list(s_std):
            self._renorm = (tuple(s_mean), tuple(s_std), tuple(t_mean), tuple(t_std))

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.teacher.to(pl_module.device)  # the student is on its device by now

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's logits (B, C) for the student's normalised batch x (B, 3, H, W)."""
        if self._renorm is not None:
            x = renormalize(x, *self._renorm)
        self.teacher.eval()  # in case anything called .train() on it
        return self.teacher(x).float()

    def training_loss(self, trainer, pl_module, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, loss):
        """Called by ``ImageClassifier.training_loss``: blends the student's loss with the KD term."""
        teacher = self.teacher_logits(x)
        if teacher.shape != logits.shape:
            raise ValueError(f"Distillation: teacher logits {tuple(teacher.shape)} vs student {tuple(logits.shape)}.")
        kd = kd_term(logits.float(), teacher, self.temperature)
        pl_module.log("train/kd", kd)
        return self.alpha * kd + (1 - self.alpha) * loss

    def state_dict(self) -> dict[str, Any]:
        # The teacher's weights are not saved: the source names them, and a resume reloads it.
        return {"teacher": self.source, "temperature": self.temperature, "alpha": self.alpha}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("teacher") != self.source:
            warnings.warn(f"Distillation: resuming with teacher {self.source!r}; the checkpoint used "
                          f"{state_dict.get('teacher')!r}.")
