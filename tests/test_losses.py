"""zoo.losses: the focal loss is the cross-entropy at gamma 0 (hard and soft targets, class weights, label smoothing),
shrinks the loss of easy examples, and has finite gradients; "balanced" class weights are inverse frequencies."""

import pytest
import torch
import torch.nn.functional as F

from zoo.losses import balanced_class_weights, focal_loss, given_class_weights

C = 5


def batch(soft: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(16, C, generator=g) * 3
    target = torch.randint(0, C, (16,), generator=g)
    if soft:  # mixup-style: two labels mixed
        other = torch.randint(0, C, (16,), generator=g)
        lam = torch.rand(16, 1, generator=g)
        target = lam * F.one_hot(target, C) + (1 - lam) * F.one_hot(other, C)
    return logits, target


@pytest.mark.parametrize("soft", [False, True], ids=["class_ids", "probabilities"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_focal_with_gamma_0_is_the_cross_entropy(soft, weighted, smoothing):
    logits, target = batch(soft)
    weight = torch.tensor([0.5, 1.0, 2.0, 0.2, 1.3]) if weighted else None
    expected = F.cross_entropy(logits, target, weight=weight, label_smoothing=smoothing)
    torch.testing.assert_close(focal_loss(logits, target, 0.0, weight, smoothing), expected)


def test_focal_shrinks_easy_examples_more_than_hard_ones():
    target = torch.tensor([0, 0])
    logits = torch.tensor([[6.0, 0.0, 0.0], [0.2, 0.0, 0.0]])  # easy (p ~ 0.995), hard (p ~ 0.38)
    ce = F.cross_entropy(logits, target, reduction="none")
    focal = torch.stack([focal_loss(logits[i : i + 1], target[i : i + 1], gamma=2.0) for i in range(2)])
    ratio = focal / ce
    assert (focal < ce).all() and ratio[0] < 1e-4 and ratio[1] > 0.1
    p = logits.softmax(-1)[:, 0]
    torch.testing.assert_close(ratio, (1 - p) ** 2)  # the modulating factor (1 - p_t)^gamma, for hard targets


def test_focal_gradient_is_finite_at_certain_predictions():
    logits = torch.tensor([[80.0, -80.0, 0.0]], requires_grad=True)
    for gamma in (0.5, 2.0):
        focal_loss(logits, torch.tensor([0]), gamma).backward()
        assert torch.isfinite(logits.grad).all()


def test_focal_follows_half_precision_logits_in_float32():
    logits, target = batch(soft=False)
    loss = focal_loss(logits.half(), target, 2.0)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_balanced_weights_are_inverse_frequencies_with_mean_1():
    w = balanced_class_weights(torch.tensor([900, 90, 10]))
    torch.testing.assert_close(w, torch.tensor([1 / 900, 1 / 90, 1 / 10]) * 3 / (1 / 900 + 1 / 90 + 1 / 10))
    assert w.mean().item() == pytest.approx(1.0)
    torch.testing.assert_close(balanced_class_weights(torch.tensor([5, 5, 5])), torch.ones(3))
    # A class without examples gets 0 (it is never a target); the others still average 1.
    w = balanced_class_weights(torch.tensor([10, 0, 30]))
    assert w[1] == 0 and w[[0, 2]].mean().item() == pytest.approx(1.0) and w[0] == pytest.approx(3 * w[2])
    with pytest.raises(ValueError, match="non-negative"):
        balanced_class_weights(torch.tensor([0, 0]))


def test_given_class_weights_checks_the_option():
    assert given_class_weights("none", 3) is None and given_class_weights("balanced", 3) is None
    torch.testing.assert_close(given_class_weights([1, 2, 3], 3), torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="one per class"):
        given_class_weights([1.0, 2.0], 3)
    with pytest.raises(ValueError, match="'balanced'"):
        given_class_weights("balance", 3)
