"""ImageClassifier's training toolkit: val/test metrics (F1, precision, recall, AUROC, per-class accuracy), class
weights and the focal loss, the training loss logged only when it is shown, and model cards that carry the new
metrics while old cards still evaluate."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

import zoo
from zoo import hub
from zoo.metrics import metric_keys
from zoo.cli import main
from zoo.losses import balanced_class_weights, focal_loss

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

CLASSES = ["cat", "dog", "sea lion"]
SCALARS = ["loss", "acc", "f1_macro", "f1_micro", "precision_macro", "recall_macro", "auroc"]


class Data(L.LightningDataModule):
    """12 random images per split, 3 classes (6/4/2 examples in training), with names and counts."""

    classes = CLASSES

    def __init__(self, counts: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.x, self.y = torch.randn(12, 3, 32, 32), torch.tensor([0] * 6 + [1] * 4 + [2] * 2)
        if counts:
            self.class_counts = lambda: torch.bincount(self.y, minlength=3)

    def loader(self):
        return DataLoader(TensorDataset(self.x, self.y), batch_size=4)

    train_dataloader = val_dataloader = test_dataloader = loader


def tiny(**kwargs):
    torch.manual_seed(0)
    return zoo.get_model("cifar_cnn", num_classes=3, schedule="constant", **kwargs)


def trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "enable_model_summary": False,
                "enable_checkpointing": False, "default_root_dir": tmp_path}
    return L.Trainer(**{**defaults, **kwargs})


def test_val_and_test_log_the_classification_metrics(tmp_path):
    model, t = tiny(), trainer(tmp_path, fast_dev_run=2)
    t.fit(model, datamodule=Data())
    assert {f"val/{k}" for k in SCALARS} <= set(t.callback_metrics)
    (results,) = t.test(model, datamodule=Data(), verbose=False)
    per_class = {"test/acc_cat", "test/acc_dog", "test/acc_sea_lion"}  # the DataModule's names, as keys
    assert set(results) == {f"test/{k}" for k in SCALARS} | per_class
    assert all(0 <= results[k] <= 1 for k in results if k != "test/loss")
    # The first 8 examples (fast_dev_run=2, batches of 4): 6 cats, 2 dogs, no sea lion. The plain accuracy is the
    # mean of the per-class accuracies weighted by class frequency.
    assert results["test/acc"] == pytest.approx((6 * results["test/acc_cat"] + 2 * results["test/acc_dog"]) / 8)
    # Macro AUROC over the classes that occur (one-vs-rest: the share of positive/negative pairs ranked right).
    x, y = Data().x[:8], Data().y[:8]
    with torch.no_grad():
        p = model.eval()(x).softmax(-1)
    pairs = lambda c: (p[y == c, c][:, None] - p[y != c, c][None]).sign().add(1).div(2).mean()  # noqa: E731
    assert results["test/auroc"] == pytest.approx(float((pairs(0) + pairs(1)) / 2), abs=1e-6)


def test_per_class_keys_fall_back_to_indices():
    assert metric_keys(["sea lion", "dog/cat", "x"]) == ["sea_lion", "dog_cat", "x"]
    assert metric_keys(["a b", "a_b"]) == ["0", "1"]  # would collide
    assert tiny().label_names() == ["0", "1", "2"]  # outside a Trainer, no hparam class_names


# validation_step called outside a Trainer: its self.log call is a no-op, which Lightning says with a warning.
@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
def test_evaluation_steps_return_logits_and_targets():
    model = tiny().eval()
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        out = model.validation_step((x, y), 0)
        torch.testing.assert_close(out["logits"], model(x))
    assert torch.equal(out["target"], y)


def test_balanced_class_weights_come_from_the_datamodule(tmp_path):
    model, t = tiny(class_weights="balanced"), trainer(tmp_path, fast_dev_run=1)
    t.fit(model, datamodule=Data())
    torch.testing.assert_close(model.class_weight, balanced_class_weights(torch.tensor([6, 4, 2])))
    logits, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 2, 1])
    torch.testing.assert_close(model.loss(logits, y), F.cross_entropy(logits, y, weight=model.class_weight))
    assert "class_weight" not in model.state_dict()  # recomputed at fit; checkpoints from before still load


def test_balanced_without_class_counts_says_what_to_do(tmp_path):
    with pytest.raises(ValueError, match=r"class_counts\(\).*Data lacks"):
        trainer(tmp_path, fast_dev_run=1).fit(tiny(class_weights="balanced"), datamodule=Data(counts=False))


def test_loss_options_compose_with_label_smoothing_and_soft_targets():
    logits, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    soft = torch.softmax(torch.randn(6, 3), -1)
    weights = [1.0, 2.0, 0.5]
    ce = tiny(class_weights=weights, label_smoothing=0.1)
    w = torch.tensor(weights)
    torch.testing.assert_close(ce.loss(logits, y), F.cross_entropy(logits, y, weight=w, label_smoothing=0.1))
    focal0 = tiny(loss="focal", focal_gamma=0.0, class_weights=weights, label_smoothing=0.1)
    for target in (y, soft):
        torch.testing.assert_close(focal0.loss(logits, target), ce.loss(logits, target))
    focal = tiny(loss="focal", focal_gamma=2.0)
    torch.testing.assert_close(focal.loss(logits, soft), focal_loss(logits, soft, 2.0))


class Steps(Logger):
    """Records what reaches a logger: (step, metrics)."""

    name, version = "steps", 0

    def __init__(self):
        super().__init__()
        self.rows = []

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_metrics(self, metrics, step=None):
        self.rows.append((step, dict(metrics)))


class Losses(L.Callback):
    def __init__(self):
        self.losses = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_train_loss_is_logged_as_the_mean_since_the_last_write(tmp_path):
    """log_every_n_steps=2 over 5 batches: the logger gets the mean of steps 0-1 and 2-3; the progress bar shows the
    first step at once and the last batch at the end of the epoch."""
    logger, losses = Steps(), Losses()
    x, y = torch.randn(20, 3, 32, 32), torch.arange(20) % 3
    t = trainer(tmp_path, max_epochs=1, logger=logger, log_every_n_steps=2, callbacks=[losses])
    t.fit(tiny(), DataLoader(TensorDataset(x, y), batch_size=4))
    written = [(step, m["train/loss"]) for step, m in logger.rows if "train/loss" in m]
    loss = losses.losses
    assert [s for s, _ in written] == [1, 3]
    assert [v for _, v in written] == pytest.approx([(loss[0] + loss[1]) / 2, (loss[2] + loss[3]) / 2])
    assert float(t.progress_bar_metrics["train/loss"]) == pytest.approx(loss[4])


def test_train_loss_costs_no_self_log_call_on_most_steps(tmp_path, monkeypatch):
    """Issue #26: each self.log costs ~0.4 ms. 10 steps at Lightning's default log_every_n_steps (50): the first
    step (progress bar) and the last batch only; accumulation: once per optimizer step at most."""
    model, calls = tiny(), []
    log = model.log
    monkeypatch.setattr(model, "log", lambda name, *a, **k: (calls.append(name), log(name, *a, **k)))
    data = DataLoader(TensorDataset(torch.randn(40, 3, 32, 32), torch.arange(40) % 3), batch_size=4)
    trainer(tmp_path, max_epochs=1).fit(model, data)
    assert calls.count("train/loss") == 2
    calls.clear()
    model = tiny()
    log = model.log
    monkeypatch.setattr(model, "log", lambda name, *a, **k: (calls.append(name), log(name, *a, **k)))
    trainer(tmp_path, max_epochs=1, log_every_n_steps=1, accumulate_grad_batches=2).fit(model, data)
    assert calls.count("train/loss") == 5  # 10 batches, 5 optimizer steps


def test_the_options_through_the_cli(cifar_folder, tmp_path):
    """`zoo fit` parses the new options (a Literal-or-list union included), and "balanced" reads the CIFAR-10
    DataModule's class_counts(); the confusion-matrix preset writes its PNG into the run folder."""
    root = tmp_path / "run"
    assert main(["fit", "--config", str(CONFIGS / "cifar_cnn.yaml"), "--config",
                 str(CONFIGS / "callbacks" / "confusion_matrix.yaml"), "--data.data_dir", str(cifar_folder),
                 "--data.val_size", "10", "--data.batch_size", "16", "--trainer.max_epochs", "1",
                 "--trainer.limit_train_batches", "2", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
                 "--trainer.default_root_dir", str(root), "--model.class_weights", "balanced", "--model.loss", "focal",
                 "--model.init", "cheatsheet"]) == 0
    assert list(root.rglob("confusion_matrix_val_epoch000.png"))
    hparams = torch.load(next(root.rglob("last.ckpt")), weights_only=True)["hyper_parameters"]
    assert (hparams["class_weights"], hparams["loss"], hparams["init"]) == ("balanced", "focal", "cheatsheet")
    with pytest.raises(SystemExit):
        main(["fit", "--model", "CifarCNN", "--model.class_weights", "[1.0, 2.0]", "--model.init", "glorot",
              "--print_config"])


# ---------------------------------------------------------------------------------------------------- cards
def test_cards_carry_macro_f1_and_per_class_accuracy(exported):
    card = exported
    metrics = json.loads(card.read_text())["metrics"]
    assert {"test/acc", "test/loss", "test/f1_macro", "test/acc_airplane", "test/acc_truck"} <= set(metrics)
    rows = {name: (on_card, measured) for name, on_card, measured in hub.evaluate(str(card), accelerator="cpu")}
    assert rows["test/f1_macro"][0] == pytest.approx(rows["test/f1_macro"][1])


def test_old_cards_without_the_new_metrics_still_evaluate(exported):
    card = exported
    data = json.loads(card.read_text())
    data["metrics"] = {k: data["metrics"][k] for k in ("test/loss", "test/acc")}  # what published cards hold
    card.write_text(json.dumps(data))
    rows = hub.evaluate(str(card), accelerator="cpu")
    assert [name for name, _, _ in rows] == ["test/loss", "test/acc"]
    assert all(on_card == pytest.approx(measured) for _, on_card, measured in rows)


# Lightning swaps any sampler but its SequentialSampler for one when overfitting, and says so.
@pytest.mark.filterwarnings("ignore:You requested to overfit but enabled")
def test_overfit_one_batch_first(cifar_pickles, tmp_path):
    """The cheatsheet's first check, `--trainer.overfit_batches 1`: the model drives one fixed batch's loss to ~0."""
    import csv

    assert main(["fit", "--model", "CifarCNN", "--model.dropout", "0", "--model.optimizer", "adam", "--model.lr",
                 "0.003", "--model.schedule", "constant", "--data", "CIFAR10DataModule", "--data.data_dir",
                 str(cifar_pickles), "--data.val_size", "10", "--data.batch_size", "8", "--data.crop_padding", "0",
                 "--data.flip", "false",
                 "--trainer.overfit_batches", "1", "--trainer.max_epochs", "60", "--trainer.log_every_n_steps", "1",
                 "--trainer.default_root_dir", str(tmp_path), "--trainer.enable_progress_bar", "false"]) == 0
    (metrics,) = tmp_path.rglob("metrics.csv")
    with metrics.open() as f:
        losses = [float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert losses[0] > 1.5 and losses[-1] < 0.05, (losses[0], losses[-1])
