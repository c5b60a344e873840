"""Fashion-MNIST from Debian's dataset-fashion-mnist: our own IDX reader."""
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


