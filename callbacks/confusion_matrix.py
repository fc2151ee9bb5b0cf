"""A confusion-matrix image at the end of validation and/or test: a PNG in the run dir, also sent to W&B or TensorBoard.

Usage:
    trainer = L.Trainer(callbacks=[ConfusionMatrix(stage="both")])
    # zoo fit --config configs/cifar_cnn.yaml --config configs/callbacks/confusion_matrix.yaml

The model hands over its predictions through the public outputs of ``validation_step`` / ``test_step``: a dict
``{"logits": (B, C), "target": (B,)}``, as every zoo ``ImageClassifier`` returns. The counts accumulate in a
torchmetrics ``MulticlassConfusionMatrix`` (summed over processes under DDP) and are drawn with PIL (no matplotlib):
rows are true classes, columns predicted ones, colour the share of the row, text the count. Files are
``<log_dir>/confusion_matrix_<stage>_epoch<NNN>.png``, written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torchmetrics.classification import MulticlassConfusionMatrix

from zoo.hub import write_atomic

# Fixed text metrics, so an image's size depends only on the classes and the title, never on the installed fonts.
CHAR_W, LINE_H, PAD, MAX_LABEL = 7, 14, 6, 16
WHITE, DARK = np.array([247, 251, 255]), np.array([8, 48, 107])  # ends of matplotlib's "Blues"


def layout(num_classes: int, labels: list[str], title: str) -> dict[str, int]:
    """Pixel geometry of ``render_confusion_matrix``'s image: ``cell`` (side of a matrix cell), ``left`` and
    ``top`` (where the matrix starts), ``width`` and ``height`` of the whole image."""
    cell = max(8, min(48, 480 // num_classes))
    label_w = CHAR_W * min(MAX_LABEL, max(len(s) for s in labels)) + PAD
    grid = cell * num_classes
    top = LINE_H + 2 * PAD + label_w  # title, then the column labels (rotated)
    return {"cell": cell, "left": PAD + label_w, "top": top,
            "width": max(2 * PAD + label_w + grid, CHAR_W * len(title) + 2 * PAD), "height": top + grid + PAD}


def render_confusion_matrix(matrix: torch.Tensor, labels: list[str], title: str) -> Image.Image:
    """An RGB image of a (C, C) count matrix (rows: true class, columns: predicted), coloured by row share.

    Args:
        matrix: counts (C, C), e.g. ``MulticlassConfusionMatrix().compute()``.
        labels: C class names (cut to 16 characters).
        title: drawn on top.
    """
    counts = matrix.detach().cpu().double()
    share = (counts / counts.sum(1, keepdim=True).clamp_min(1)).numpy()  # rows: true class
    labels = [str(s)[:MAX_LABEL] for s in labels]
    g = layout(len(labels), labels, title)
    cell, left, top, side = g["cell"], g["left"], g["top"], g["cell"] * len(labels)
    pixels = np.full((g["height"], g["width"], 3), 255, np.uint8)
    colours = (WHITE + (DARK - WHITE) * share[..., None]).round().astype(np.uint8)  # (C, C, 3)
    pixels[top:top + side, left:left + side] = colours.repeat(cell, 0).repeat(cell, 1)
    image = Image.fromarray(pixels)
    draw, font = ImageDraw.Draw(image), ImageFont.load_default()
    draw.text((PAD, PAD), title, fill="black", font=font)
    # Column labels: written as rows on a strip, then turned 90 degrees so they read upwards from the matrix.
    strip = Image.new("RGB", (left - PAD, side), "white")
    strip_draw = ImageDraw.Draw(strip)
    every = -(-(LINE_H - 2) // cell)  # label every class when the cells are tall enough for a line, else some
    for i, name in enumerate(labels):
        if i % every:
            continue
        y = i * cell + (cell - LINE_H) // 2
        draw.text((PAD, top + y), name, fill="black", font=font)
        strip_draw.text((PAD // 2, y), name, fill="black", font=font)
    image.paste(strip.rotate(90, expand=True), (left, top - (left - PAD)))
    for (i, j), n in np.ndenumerate(counts.numpy().astype(np.int64)):
        text = str(n)
        if n and len(text) * CHAR_W + 2 <= cell and cell >= LINE_H + 4:
            x, y = left + j * cell + (cell - len(text) * CHAR_W) // 2, top + i * cell + (cell - LINE_H) // 2
            draw.text((x, y), text, fill="white" if share[i, j] > 0.5 else "black", font=font)
    return image


class ConfusionMatrix(L.Callback):
    """Draw the confusion matrix of the validation and/or test epochs (the sanity check excluded).

    Args:
        stage: "val", "test" or "both".
        every_n_epochs: draw validation every this many epochs (the last epoch always; test always).

    Attributes:
        matrices: the last drawn count matrix (C, C) per stage, on the CPU.
        saved: PNGs written by this process, newest last.
    """

    def __init__(self, stage: Literal["val", "test", "both"] = "both", every_n_epochs: int = 1):
        if stage not in ("val", "test", "both"):
            raise ValueError(f"stage={stage!r}: choose 'val', 'test' or 'both'.")
        self.stages = ("val", "test") if stage == "both" else (stage,)
        self.every_n_epochs = every_n_epochs
        self.metric: MulticlassConfusionMatrix | None = None
        self.matrices: dict[str, torch.Tensor] = {}
        self.saved: list[Path] = []

    def _due(self, trainer: L.Trainer, stage: str) -> bool:
        if stage not in self.stages or trainer.sanity_checking:
            return False
        epoch = trainer.current_epoch
        last = trainer.max_epochs is not None and epoch + 1 >= trainer.max_epochs
        return stage == "test" or last or (epoch + 1) % self.every_n_epochs == 0

    # ------------------------------------------------------------------------------------------ accumulating
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Made here, on every process, so each one joins the sync in compute() even if it saw no batch.
        num_classes = getattr(pl_module, "num_classes", None)
        if num_classes:
            self.metric = MulticlassConfusionMatrix(num_classes=num_classes)

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.metric is not None and self._due(trainer, stage):
            self.metric = self.metric.to(pl_module.device)
            self.metric.reset()

    def _update(self, trainer: L.Trainer, outputs: Any, stage: str) -> None:
        if not self._due(trainer, stage):
            return
        if not (isinstance(outputs, Mapping) and "logits" in outputs and "target" in outputs):
            raise TypeError(f"ConfusionMatrix needs the model's {stage} step to return {{'logits': (B, C), "
                            f"'target': (B,)}} (zoo classifiers do); it returned {type(outputs).__name__}.")
        logits, target = outputs["logits"].detach(), outputs["target"]
        if self.metric is None or self.metric.num_classes != logits.shape[-1]:
            self.metric = MulticlassConfusionMatrix(num_classes=logits.shape[-1]).to(logits.device)
        self.metric.update(logits, target if target.ndim == 1 else target.argmax(-1))

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer, pl_module, "test")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int,
                                dataloader_idx: int = 0) -> None:
        self._update(trainer, outputs, "val")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._update(trainer, outputs, "test")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._finish(trainer, pl_module, "test")

    # ----------------------------------------------------------------------------------------------- drawing
    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.metric is None or not self._due(trainer, stage):
            return
        matrix = self.metric.compute().cpu()  # every process: a collective under DDP
        self.metric.reset()
        folder = Path(trainer.log_dir or trainer.default_root_dir)  # every process: log_dir may broadcast
        if not trainer.is_global_zero:
            return
        self.matrices[stage] = matrix
        labels = pl_module.label_names() if hasattr(pl_module, "label_names") else None
        if not labels or len(labels) != len(matrix):
            labels = [str(i) for i in range(len(matrix))]
        epoch = trainer.current_epoch
        title = f"{stage} confusion matrix, epoch {epoch} (rows: true, columns: predicted)"
        self.emit(trainer, stage, render_confusion_matrix(matrix, labels, title), folder, epoch)

    def emit(self, trainer: L.Trainer, stage: str, image: Image.Image, folder: Path, epoch: int) -> Path:
        """Write ``image`` as ``<folder>/confusion_matrix_<stage>_epoch<NNN>.png`` and send it to every logger that
        takes images: ``log_image`` (W&B), else ``experiment.add_image`` (TensorBoard)."""
        path = folder / f"confusion_matrix_{stage}_epoch{epoch:03d}.png"
        write_atomic(path, lambda tmp: image.save(tmp, format="PNG"))
        self.saved.append(path)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key=f"{stage}/confusion_matrix", images=[image], step=trainer.global_step,
                                 caption=[f"epoch {epoch}"])
            elif hasattr(getattr(logger, "experiment", None), "add_image"):
                logger.experiment.add_image(f"{stage}/confusion_matrix", np.asarray(image),
                                            global_step=trainer.global_step, dataformats="HWC")
        return path
