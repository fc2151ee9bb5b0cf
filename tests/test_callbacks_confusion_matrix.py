"""ConfusionMatrix: counts every validation/test prediction, draws a PNG of the right size per epoch (not for the
sanity check) and hands it to loggers that take images (W&B's log_image, TensorBoard's add_image)."""

from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import Logger
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

import zoo
from zoo.callbacks import ConfusionMatrix
from zoo.callbacks.confusion_matrix import DARK, WHITE, layout, render_confusion_matrix


def centre(g: dict, i: int, j: int) -> tuple[int, int]:
    """(x, y) of the centre of matrix cell (row i, column j)."""
    return g["left"] + j * g["cell"] + g["cell"] // 2, g["top"] + i * g["cell"] + g["cell"] // 2


def test_render_draws_a_cell_per_class_pair_coloured_by_row_share():
    labels, title = ["cat", "dog", "bird"], "val"
    matrix = torch.tensor([[30, 0, 0], [0, 5, 5], [0, 0, 0]])
    image = render_confusion_matrix(matrix, labels, title)
    g = layout(3, labels, title)
    assert image.mode == "RGB" and image.size == (g["width"], g["height"])
    pixels = np.asarray(image)
    x, y = centre(g, 0, 0)
    # The cell's corner (no text there): a whole row in one cell is the darkest colour, an empty cell the lightest.
    assert (pixels[y - g["cell"] // 2 + 1, x - g["cell"] // 2 + 1] == DARK).all()
    x, y = centre(g, 0, 1)
    assert (pixels[y, x] == WHITE).all()
    x, y = centre(g, 1, 2)
    corner = pixels[y - g["cell"] // 2 + 1, x - g["cell"] // 2 + 1]
    assert (corner == np.round((WHITE + DARK) / 2)).all()  # half the row
    x, y = centre(g, 2, 2)
    assert (pixels[y, x] == WHITE).all()  # a class never seen: no division by zero


def test_render_scales_to_many_classes():
    labels = [f"class_{i}" for i in range(200)]
    image = render_confusion_matrix(torch.eye(200, dtype=torch.long), labels, "test")
    g = layout(200, labels, "test")
    assert g["cell"] == 8 and image.size == (g["width"], g["height"])


class ImageLogger(Logger):
    """A logger with W&B's log_image signature; records the calls."""

    name, version = "images", 0

    def __init__(self):
        super().__init__()
        self.images = []

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    def log_image(self, key, images, step=None, **kwargs):
        self.images.append((key, images, step, kwargs))


class BoardLogger(Logger):
    """A logger without log_image whose experiment is TensorBoard-like (add_image); records the calls."""

    name, version = "board", 0

    def __init__(self):
        super().__init__()
        self.images = []
        self.writer = SimpleNamespace(add_image=lambda *args, **kwargs: self.images.append((args, kwargs)))

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        pass

    @property
    def experiment(self):
        return self.writer


def tiny():
    torch.manual_seed(0)
    return zoo.get_model("cifar_cnn", num_classes=3, schedule="constant")


def loader(n: int = 12):
    torch.manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(n, 3, 32, 32), torch.arange(n) % 3), batch_size=4)


def fit_and_test(tmp_path, logger, **callback_args):
    cm = ConfusionMatrix(**callback_args)
    trainer = L.Trainer(max_epochs=2, limit_train_batches=1, accelerator="cpu", logger=logger,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, callbacks=[cm])
    model = tiny()
    trainer.fit(model, loader(), loader(12))  # the sanity check sees 2 batches; every val epoch all 3
    trainer.test(model, loader(8), verbose=False)
    return cm


def test_writes_a_png_per_epoch_and_sends_it_to_log_image(tmp_path):
    logger = ImageLogger()
    cm = fit_and_test(tmp_path, logger)
    names = [p.name for p in cm.saved]
    assert names == ["confusion_matrix_val_epoch000.png", "confusion_matrix_val_epoch001.png",
                     "confusion_matrix_test_epoch002.png"]  # none for the sanity check; test: after 2 epochs
    assert all(p.parent == tmp_path and p.is_file() for p in cm.saved)  # no log_dir: the root dir
    assert int(cm.matrices["val"].sum()) == 12 and int(cm.matrices["test"].sum()) == 8
    assert cm.matrices["test"].sum(1).tolist() == [3, 3, 2]  # rows: true classes of 0,1,2,0,1,2,0,1
    labels = ["0", "1", "2"]  # the model's label_names: no DataModule classes here
    g = layout(3, labels, "test confusion matrix, epoch 2 (rows: true, columns: predicted)")
    with Image.open(cm.saved[-1]) as png:
        assert png.size == (g["width"], g["height"]) and png.mode == "RGB"
    keys = [key for key, *_ in logger.images]
    assert keys == ["val/confusion_matrix", "val/confusion_matrix", "test/confusion_matrix"]
    assert logger.images[-1][1][0].size == (g["width"], g["height"])


def test_tensorboard_style_loggers_get_an_hwc_array(tmp_path):
    logger = BoardLogger()
    fit_and_test(tmp_path, logger, stage="test")
    (((tag, image), kwargs),) = logger.images
    assert tag == "test/confusion_matrix" and kwargs["dataformats"] == "HWC" and image.shape[2] == 3


def test_every_n_epochs_and_stage_select_what_is_drawn(tmp_path):
    cm = fit_and_test(tmp_path, False, stage="val", every_n_epochs=5)
    assert [p.name for p in cm.saved] == ["confusion_matrix_val_epoch001.png"]  # the last epoch always


class NoOutputs(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 3)

    def validation_step(self, batch, batch_idx):
        return None


def test_a_model_without_outputs_is_told_what_to_return(tmp_path):
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[ConfusionMatrix()], default_root_dir=tmp_path)
    data = DataLoader(TensorDataset(torch.randn(4, 4), torch.zeros(4, dtype=torch.long)), batch_size=2)
    with pytest.raises(TypeError, match="return {'logits'"):
        trainer.validate(NoOutputs(), data, verbose=False)


def test_rejects_an_unknown_stage():
    with pytest.raises(ValueError, match="'both'"):
        ConfusionMatrix(stage="train")
