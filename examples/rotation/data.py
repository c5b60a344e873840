"""The rotation task's data: Fashion-MNIST (read by common/fashion_mnist.py)
as raw [0, 1] pixels. Training images stay upright; a held-out validation
set from the training split and the test set are rotated once, here, by the
true angle, with the same bilinear rotation the hyperparameter uses, so the
best lambda is exactly the true angle."""
import functools
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common.fashion_mnist import DEFAULT_ROOT, load_split  # noqa: E402,F401

from rotate import rotate  # noqa: E402


@functools.lru_cache(maxsize=4)
def _load(split: str, root: str):
    """One read per split and folder in a process (a table or the tests run many)."""
    return load_split(split, root)


def to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] in [0, 1]."""
    return (images.float() / 255.0).unsqueeze(1)


@torch.no_grad()
def rotated(images: torch.Tensor, degrees: float, batch: int = 2000) -> torch.Tensor:
    return torch.cat([rotate(images[i:i + batch], degrees) for i in range(0, len(images), batch)])


def prepare(angle: float, train_size: int, val_size: int, test_size: int, seed: int,
            root=DEFAULT_ROOT):
    """dict(train=(x, y) upright, val=(x, y) and test=(x, y) rotated by `angle`).
    Train and validation images are disjoint draws from the training split
    (seeded); the test images are the first `test_size` of t10k."""
    images, labels = _load("train", str(root))
    if train_size + val_size > len(labels):
        raise ValueError(f"train_size + val_size = {train_size + val_size} exceeds the "
                         f"{len(labels)} training images")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    tr, va = order[:train_size], order[train_size:train_size + val_size]
    test_x, test_y = _load("t10k", str(root))
    return dict(train=(to_unit(images[tr]), labels[tr]),
                val=(rotated(to_unit(images[va]), angle), labels[va]),
                test=(rotated(to_unit(test_x[:test_size]), angle), test_y[:test_size]))


class Batches:
    """Endless shuffled minibatches of (x, y), reproducible from a seed."""

    def __init__(self, x, y, batch_size, seed):
        if batch_size > len(y):
            raise ValueError(f"batch size {batch_size} exceeds the {len(y)} examples")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.g = torch.Generator().manual_seed(seed)
        self.order, self.pos = torch.randperm(len(y), generator=self.g), 0

    def __next__(self):
        if self.pos + self.batch_size > len(self.order):
            self.order, self.pos = torch.randperm(len(self.y), generator=self.g), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.x[idx], self.y[idx]

    def __iter__(self):
        return self
