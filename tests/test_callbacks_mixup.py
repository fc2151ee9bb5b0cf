"""MixUpCutMix (callbacks/mixup.py): the mixing maths, soft targets on odd batches, and its RNG in checkpoints."""

import lightning as L
import numpy as np
import pytest
import torch
from conftest import tiny_data, tiny_trainer

import zoo
from zoo.callbacks import MixUpCutMix
from zoo.callbacks.mixup import cutmix, cutmix_box, mix_batch, mixup, soft_targets


class Spy(L.Callback):
    """Records what training_step fed the loss (through the classifier's training_loss hook)."""

    def __init__(self):
        self.targets = []

    def training_loss(self, trainer, pl_module, x, logits, y, loss):
        self.targets.append(y.detach().clone())
        return loss


@pytest.mark.parametrize("switch_prob", [0.0, 1.0], ids=["mixup", "cutmix"])
def test_mixed_targets_sum_to_one_on_an_odd_batch(switch_prob):
    x, y = torch.randn(5, 3, 8, 8), torch.tensor([0, 1, 2, 3, 4])
    rng = np.random.default_rng(0)
    mx, p = mix_batch(x, y, 10, rng, mixup_alpha=1.0, cutmix_alpha=1.0, switch_prob=switch_prob, label_smoothing=0.1)
    assert mx.shape == x.shape and p.shape == (5, 10)
    torch.testing.assert_close(p.sum(1), torch.ones(5))
    assert not torch.equal(mx, x)
    # Each row puts its weight on its own class and its neighbour's (roll by one), smoothing elsewhere.
    assert set(p[1].topk(2).indices.tolist()) == {0, 1} and p[1, 5:].allclose(torch.tensor(0.01))


def test_mixing_maths_by_hand():
    x, p = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 4, 4), soft_targets(torch.tensor([0, 1, 2]), 3)
    mx, mp = mixup(x, p, 0.75)
    assert mx[1, 0, 0, 0] == 0.75 * 1 + 0.25 * 0 and mp[0].tolist() == [0.75, 0.0, 0.25]
    cx, cp = cutmix(x, p, (0, 2, 0, 4))  # the top half of each image comes from its neighbour
    assert cx[0, 0, 0, 0] == 2 and cx[0, 0, 3, 0] == 0 and cp[0].tolist() == [0.5, 0.0, 0.5]
    top, bottom, left, right = cutmix_box(32, 32, 0.75, np.random.default_rng(1))
    assert 0 <= top < bottom <= 32 and (bottom - top) * (right - left) <= 16 * 16
    torch.testing.assert_close(soft_targets(torch.tensor([1]), 4, 0.2), torch.tensor([[0.05, 0.85, 0.05, 0.05]]))


def test_mixup_callback_feeds_soft_targets_and_restores_its_rng(cifar_folder, tmp_path):
    torch.manual_seed(0)  # the loader's shuffle: which images share a batch
    mix, spy = MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, seed=3), Spy()
    model = zoo.get_model("cifar_cnn")
    trainer = tiny_trainer(tmp_path, [mix, spy])
    trainer.fit(model, datamodule=tiny_data(cifar_folder))  # batches of 7: odd
    assert len(spy.targets) == 3 and all(t.shape == (7, 10) for t in spy.targets)
    assert all(torch.allclose(t.sum(1), torch.ones(7)) for t in spy.targets)
    # A row whose neighbour has the same class stays one-hot after mixing, so look for any mixed row.
    assert any((t.amax(1) < 1).any() for t in spy.targets), "nothing was mixed"
    assert 0 <= float(trainer.callback_metrics["train/acc"]) <= 1  # against the dominant label
    # The generator's state round-trips, so a resumed run draws what an unbroken one would.
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["callbacks"]
    fresh = MixUpCutMix(mixup_alpha=0.4, cutmix_alpha=1.0, seed=99)
    fresh.load_state_dict(next(v for k, v in state.items() if k.startswith("MixUpCutMix")))
    assert fresh.rng.random() == mix.rng.random()
