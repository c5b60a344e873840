"""Fashion-MNIST (read by common/fashion_mnist.py), uniform label noise, and
the clean meta set, as Meta-Weight-Net uses them."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common.fashion_mnist import DEFAULT_ROOT, MEAN, STD, load_split, read_idx, to_input  # noqa: E402,F401


NOISE_STREAM = 1_000_003


def uniform_noise(labels: torch.Tensor, rate: float, num_classes: int = 10, seed: int = 0):
    """Exactly round(rate * N) labels, chosen uniformly, replaced by a
    different class drawn uniformly. Returns (noisy labels, corrupted mask)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    # Its own stream: Batches(seed) draws randperm(n) from manual_seed(seed),
    # which would otherwise put every corrupted label first in the epoch.
    g = torch.Generator().manual_seed(NOISE_STREAM + seed)
    n = labels.numel()
    flip = torch.randperm(n, generator=g)[: round(rate * n)]
    shift = torch.randint(1, num_classes, (flip.numel(),), generator=g)
    noisy = labels.clone()
    noisy[flip] = (labels[flip] + shift) % num_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[flip] = True
    return noisy, mask


def split_meta(labels: torch.Tensor, per_class: int = 100, num_classes: int = 10, seed: int = 0):
    """Indices of a class-balanced clean meta set and of the remaining training set."""
    g = torch.Generator().manual_seed(seed + 1)
    meta = []
    for c in range(num_classes):
        idx = (labels == c).nonzero().flatten()
        if idx.numel() < per_class:
            raise ValueError(f"class {c} has only {idx.numel()} examples, {per_class} requested")
        meta.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    meta = torch.cat(meta)
    rest = torch.ones(labels.numel(), dtype=torch.bool)
    rest[meta] = False
    return meta, rest.nonzero().flatten()


class Batches:
    """Endless shuffled minibatches of a fixed dataset, reproducible from a seed."""

    def __init__(self, x, y, batch_size, seed):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.g = torch.Generator().manual_seed(seed)
        self.order, self.pos = torch.randperm(len(y), generator=self.g), 0
        self.last = None  # indices of the last batch (to look up, e.g., which labels are corrupted)

    def __next__(self):
        if self.pos + self.batch_size > len(self.order):
            self.order, self.pos = torch.randperm(len(self.y), generator=self.g), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        self.last = idx
        return to_input(self.x[idx]), self.y[idx]

    def __iter__(self):
        return self

    def state_dict(self):
        """Where the endless sequence stands: enough to continue it exactly."""
        return {"generator": self.g.get_state(), "order": self.order, "pos": self.pos}

    def load_state_dict(self, state):
        self.g.set_state(state["generator"])
        self.order, self.pos = state["order"], state["pos"]
