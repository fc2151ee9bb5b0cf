"""Per-class sampling: class-balanced training orders, seeded per epoch like ``common.EpochSampler`` so a resumed
run replays them, and seeded per-class subsets (a long-tailed or a small labelled training set).

Usage:
    sampler = BalancedSampler(train_labels, "oversample", seed=0)   # DataLoader(..., sampler=sampler)
    sampler.set_epoch(3)                                            # Lightning calls this every epoch

"oversample" keeps the epoch at the training-set size and gives every class the same share of it (minority
images repeat, majority images are subsampled); "undersample" draws ``min(class count)`` images of every class
without replacement, so the epoch is ``num_classes * min_count`` long. Within a class the draw cycles through
random permutations, so no image repeats before every image of its class has been drawn.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

Sampling = Literal["none", "oversample", "undersample"]


def generator_for(*keys: int) -> torch.Generator:
    """A CPU generator seeded from a tuple of non-negative ints, e.g. (seed, rank, epoch, batch index): each tuple
    its own well-mixed stream (numpy's SeedSequence), where sums such as ``seed + epoch`` would collide."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def class_counts(labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Images per class, int64 (num_classes,); default length: the largest label + 1."""
    return torch.bincount(torch.as_tensor(labels, dtype=torch.int64), minlength=num_classes or 0)


def class_quotas(counts: torch.Tensor, mode: Literal["oversample", "undersample"],
                 generator: torch.Generator) -> torch.Tensor:
    """How many draws each present class gets in one epoch (absent classes get 0).

    oversample: ``n // k`` each for the ``k`` present classes, the ``n % k`` left over going to classes picked at
    random (so the epoch is exactly ``n`` long); undersample: the smallest present count each.
    """
    present = (counts > 0).nonzero().flatten()
    quotas = torch.zeros_like(counts)
    if len(present) == 0:
        return quotas
    if mode == "undersample":
        quotas[present] = counts[present].min()
        return quotas
    n, k = int(counts.sum()), len(present)
    quotas[present] = n // k
    quotas[present[torch.randperm(k, generator=generator)[: n % k]]] += 1
    return quotas


def balanced_indices(labels: torch.Tensor, mode: Literal["oversample", "undersample"],
                     generator: torch.Generator, num_classes: int | None = None) -> torch.Tensor:
    """One epoch of class-balanced indices into ``labels`` (int64), shuffled; every random number from ``generator``."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    counts = class_counts(labels, num_classes)
    quotas = class_quotas(counts, mode, generator)
    drawn = []
    for c in (quotas > 0).nonzero().flatten().tolist():
        members = (labels == c).nonzero().flatten()
        q, k = int(quotas[c]), len(members)
        # Whole random permutations of the class, as many as the quota needs: no image repeats before all are seen.
        cycles = [members[torch.randperm(k, generator=generator)] for _ in range(-(-q // k))]
        drawn.append(torch.cat(cycles)[:q])
    if not drawn:
        return torch.zeros(0, dtype=torch.int64)
    order = torch.cat(drawn)
    return order[torch.randperm(len(order), generator=generator)]


class BalancedSampler(DistributedSampler):
    """Class-balanced indices, drawn with a generator seeded by ``seed + epoch`` (``set_epoch``), never the global
    RNG: the order of an epoch does not depend on what ran before it, so a resumed run sees the same batches. Under
    DDP each of the N processes takes every N-th index of that order (as ``common.EpochSampler`` does), so Lightning
    keeps it rather than wrapping it in its own reshuffling sampler.

    Args:
        labels: class id of every training item (N,).
        mode: "oversample" (epoch of N draws, classes equally often) or "undersample" (min count per class).
        seed: base seed; epoch ``e`` uses ``seed + e``, as ``common.EpochSampler`` does.
        num_classes: length of the class axis (classes absent from ``labels`` are skipped); default max label + 1.
        num_replicas, rank: the processes and this one's rank; default: the process group's, else 1 and 0.
    """

    def __init__(self, labels: torch.Tensor, mode: Literal["oversample", "undersample"], seed: int = 0,
                 num_classes: int | None = None, num_replicas: int | None = None, rank: int | None = None):
        if mode not in ("oversample", "undersample"):
            raise ValueError(f"mode must be 'oversample' or 'undersample'; got {mode!r}.")
        self.labels = torch.as_tensor(labels, dtype=torch.int64)
        self.mode, self.num_classes = mode, num_classes
        self.length = int(class_quotas(class_counts(self.labels, num_classes), mode, torch.Generator()).sum())
        distributed = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else dist.get_world_size() if distributed else 1
        rank = rank if rank is not None else dist.get_rank() if distributed else 0
        super().__init__(range(self.length), num_replicas=num_replicas, rank=rank, shuffle=False, seed=seed)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = balanced_indices(self.labels, self.mode, generator, self.num_classes).tolist()
        order += order[: self.total_size - len(order)]  # padded to a multiple of the processes, as torch's is
        return iter(order[self.rank : self.total_size : self.num_replicas])


def long_tail_quotas(counts: torch.Tensor, ratio: float) -> torch.Tensor:
    """Images class ``i`` keeps in a long-tailed copy (Cui et al., 2019, "Class-Balanced Loss"): the exponential
    profile ``int(n_max * ratio ** (-i / (C - 1)))``, n_max the largest count, capped at the images there are.
    CIFAR-10 (5,000 a class) at ratio 100: 5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50."""
    if ratio < 1:
        raise ValueError(f"imbalance_ratio must be >= 1 (head count / tail count); got {ratio}.")
    c = len(counts)
    n_max = float(counts.max())
    profile = [int(n_max * ratio ** (-i / (c - 1))) if c > 1 else int(n_max) for i in range(c)]
    return torch.minimum(counts, torch.tensor(profile, dtype=counts.dtype))


def subset_per_class(labels: torch.Tensor, quotas: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Positions in ``labels`` of ``quotas[c]`` random items of every class ``c`` (without replacement), sorted."""
    labels = torch.as_tensor(labels, dtype=torch.int64)
    kept = []
    for c, q in enumerate(quotas.tolist()):
        members = (labels == c).nonzero().flatten()
        kept.append(members[torch.randperm(len(members), generator=generator)[: min(q, len(members))]])
    return torch.cat(kept).sort().values if kept else torch.zeros(0, dtype=torch.int64)


def balanced_quotas(counts: torch.Tensor, total: int) -> torch.Tensor:
    """``total`` split as evenly as the classes allow: ``total // C`` each (the first ``total % C`` classes one more),
    and what a small class cannot supply goes to the others in turn."""
    quotas = torch.zeros_like(counts)
    left = min(total, int(counts.sum()))
    while left > 0:
        room = (counts - quotas).clamp(min=0)
        open_ = (room > 0).nonzero().flatten()
        share = torch.full((len(open_),), left // len(open_), dtype=counts.dtype)
        share[: left % len(open_)] += 1
        add = torch.minimum(share, room[open_])
        quotas[open_] += add
        left -= int(add.sum())
    return quotas
