"""Fashion-MNIST from Debian's dataset-fashion-mnist (IDX files), uniform
label noise, and the clean meta set, as Meta-Weight-Net uses them."""
import gzip
import os
import struct
from pathlib import Path

import torch

DEFAULT_ROOT = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
_DTYPES = {0x08: torch.uint8}
MEAN, STD = 0.2860, 0.3530  # training-set pixel statistics


def read_idx(path) -> torch.Tensor:
    """Reads an IDX file (optionally gzipped). Raises ValueError on anything
    that is not a well-formed uint8 IDX file, FileNotFoundError when missing."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path} (install Debian's dataset-fashion-mnist "
                                f"or set FASHION_MNIST_DIR)")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an IDX header")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code not in _DTYPES or not 1 <= ndim <= 4:
        raise ValueError(f"{path}: not a uint8 IDX file (magic {raw[:4].hex()})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated header")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    n = 1
    for d in dims:
        n *= d
    if len(raw) != header + n:
        raise ValueError(f"{path}: expected {n} data bytes for shape {dims}, found {len(raw) - header}")
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(dims)


def load_split(split: str, root=DEFAULT_ROOT):
    """(images uint8 [N, 28, 28], labels int64 [N]) for split 'train' or 't10k'."""
    root = Path(root)

    def find(stem):
        for name in (stem + ".gz", stem):
            if (root / name).exists():
                return root / name
        return root / (stem + ".gz")

    images = read_idx(find(f"{split}-images-idx3-ubyte"))
    labels = read_idx(find(f"{split}-labels-idx1-ubyte")).long()
    if images.dim() != 3 or labels.dim() != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{root}: {split} images {tuple(images.shape)} and labels "
                         f"{tuple(labels.shape)} do not match")
    return images, labels


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 28, 28] -> normalised float [N, 1, 28, 28]."""
    return ((images.float() / 255.0 - MEAN) / STD).unsqueeze(1)


def uniform_noise(labels: torch.Tensor, rate: float, num_classes: int = 10, seed: int = 0):
    """Exactly round(rate * N) labels, chosen uniformly, replaced by a
    different class drawn uniformly. Returns (noisy labels, corrupted mask)."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    g = torch.Generator().manual_seed(seed)
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

    def __next__(self):
        if self.pos + self.batch_size > len(self.order):
            self.order, self.pos = torch.randperm(len(self.y), generator=self.g), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return to_input(self.x[idx]), self.y[idx]

    def __iter__(self):
        return self
