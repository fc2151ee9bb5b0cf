"""Class-balanced samplers and per-class subsets (datamodules/sampling.py): pure functions on tiny label tensors."""

from __future__ import annotations

import pytest
import torch

from zoo.datamodules.sampling import (BalancedSampler, balanced_quotas, class_counts, generator_for, long_tail_quotas,
                                      subset_per_class)

LABELS = torch.tensor([0] * 80 + [1] * 15 + [2] * 5)  # 80 / 15 / 5: a long tail


def test_oversample_draws_every_class_equally_often_over_an_epoch_of_n():
    sampler = BalancedSampler(LABELS, "oversample", seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == len(LABELS)
    counts = class_counts(LABELS[order], 3).tolist()
    assert max(counts) - min(counts) <= 1  # 100 draws over 3 classes: 34/33/33, not merely in expectation
    # A minority class is cycled through whole permutations: its 5 images are each drawn 6 or 7 times.
    per_image = torch.bincount(torch.tensor(order), minlength=len(LABELS))[95:]
    assert per_image.min() >= 6 and per_image.max() <= 7


def test_undersample_draws_the_smallest_count_per_class_without_replacement():
    sampler = BalancedSampler(LABELS, "undersample", seed=0)
    order = list(sampler)
    assert len(order) == len(sampler) == 3 * 5
    assert class_counts(LABELS[order], 3).tolist() == [5, 5, 5]
    assert len(set(order)) == len(order)


def test_order_is_a_function_of_seed_and_epoch_only():
    a, b = BalancedSampler(LABELS, "oversample", seed=4), BalancedSampler(LABELS, "oversample", seed=4)
    torch.manual_seed(123), list(a)
    torch.manual_seed(999)  # the global RNG plays no part
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)  # a resumed run (a new sampler at epoch 1) replays epoch 1
    assert list(BalancedSampler(LABELS, "oversample", seed=5)) != list(BalancedSampler(LABELS, "oversample", seed=4))


def test_absent_classes_are_skipped():
    labels = torch.tensor([0, 0, 2, 2, 2, 2])
    order = list(BalancedSampler(labels, "undersample", seed=0, num_classes=4))
    assert sorted(labels[order].tolist()) == [0, 0, 2, 2]


def test_long_tail_quotas_follow_cui_et_al():
    quotas = long_tail_quotas(torch.full((10,), 5000), 100)
    assert quotas.tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]  # CIFAR-10-LT, 12,406 images
    assert long_tail_quotas(torch.tensor([6, 6, 6]), 1).tolist() == [6, 6, 6]
    assert long_tail_quotas(torch.tensor([10, 3, 10]), 4).tolist() == [10, 3, 2]  # capped at what a class has


def test_subset_per_class_is_seeded_and_exact():
    quotas = torch.tensor([7, 2, 5])
    kept = subset_per_class(LABELS, quotas, generator_for(0, 1))
    assert class_counts(LABELS[kept], 3).tolist() == [7, 2, 5] and len(set(kept.tolist())) == 14
    assert torch.equal(kept, subset_per_class(LABELS, quotas, generator_for(0, 1)))
    assert not torch.equal(kept, subset_per_class(LABELS, quotas, generator_for(1, 1)))


def test_balanced_quotas_spread_the_total_and_spill_over_small_classes():
    assert balanced_quotas(torch.tensor([100, 100, 100]), 10).tolist() == [4, 3, 3]
    assert balanced_quotas(torch.tensor([100, 2, 100]), 30).tolist() == [14, 2, 14]
    assert balanced_quotas(torch.tensor([3, 2]), 99).tolist() == [3, 2]


@pytest.mark.parametrize("mode", ["oversample", "undersample"])
def test_two_processes_split_the_one_process_order(mode):
    """Under DDP each process takes every other index of the same seeded order: at a batch of B/2 the two
    processes' batches together are the one-process batch of B, step by step."""
    labels = torch.tensor([0] * 30 + [1] * 9 + [2] * 5)
    one = BalancedSampler(labels, mode, seed=3)
    ranks = [BalancedSampler(labels, mode, seed=3, num_replicas=2, rank=r) for r in (0, 1)]
    for s in (one, *ranks):
        s.set_epoch(2)
    order, shards = list(one), [list(s) for s in ranks]
    assert len(ranks[0]) == len(shards[0]) == (len(order) + 1) // 2
    for step in range(len(order) // 4):  # batch 4 in one process, 2 in each of the two
        together = shards[0][2 * step : 2 * step + 2] + shards[1][2 * step : 2 * step + 2]
        assert sorted(together) == sorted(order[4 * step : 4 * step + 4])
