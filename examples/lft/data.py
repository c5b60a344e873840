"""Small image domains available offline, as a stand-in for LFT's
miniImageNet / CUB / Cars / Places / Plantae (which cannot be downloaded here).

Training domains (pseudo-seen / pseudo-unseen are drawn from these):
  fashion-tops   Fashion-MNIST train split: T-shirt, pullover, dress, coat, shirt
  fashion-other  Fashion-MNIST train split: trouser, sandal, sneaker, bag, ankle boot
  fashion-edges  Fashion-MNIST test split, all 10 classes, drawn as inverted
                 Sobel edge maps: the same objects in another style, the kind
                 of shift in feature statistics FT layers are meant to cover
Held-out test domain:
  digits         scikit-learn's handwritten digits (8x8, 10 classes), upsampled

Images are grey; they are resized to `size` and repeated to 3 channels."""
import os
import sys

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from common.fashion_mnist import load_split  # noqa: E402

TRAIN_DOMAINS = ("fashion-tops", "fashion-other", "fashion-edges")
TEST_DOMAIN = "digits"


def _fashion(split):
    images, labels = load_split(split)
    return images.float() / 255.0, labels


def _edges(x):
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]).reshape(1, 1, 3, 3)
    gx = F.conv2d(x.unsqueeze(1), kx, padding=1)
    gy = F.conv2d(x.unsqueeze(1), kx.transpose(2, 3), padding=1)
    mag = (gx ** 2 + gy ** 2).sqrt().squeeze(1)
    return 1.0 - (mag / mag.amax(dim=(1, 2), keepdim=True).clamp_min(1e-6))


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32) / 16.0, torch.tensor(d.target)


def load_domain(name, size=64, max_per_class=200):
    """{class index: images [n, 3, size, size]} for a domain, normalised."""
    if name in ("fashion-tops", "fashion-other"):
        x, y = _fashion("train")
        classes = [0, 2, 3, 4, 6] if name == "fashion-tops" else [1, 5, 7, 8, 9]
    elif name == "fashion-edges":
        x, y = _fashion("t10k")
        x, classes = _edges(x), list(range(10))
    elif name == "digits":
        (x, y), classes = _digits(), list(range(10))
    else:
        raise ValueError(f"unknown domain {name!r}")
    out = {}
    for i, c in enumerate(classes):
        imgs = x[y == c][:max_per_class]
        imgs = F.interpolate(imgs.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)
        imgs = (imgs - imgs.mean()) / imgs.std().clamp_min(1e-6)
        out[i] = imgs.expand(-1, 3, -1, -1).contiguous()
    return out


def episode(domain, n_way, k_shot, n_query, g):
    """(support [n_way*k_shot], query [n_way*n_query], query labels), support grouped by class."""
    classes = torch.randperm(len(domain), generator=g)[:n_way].tolist()
    support, query = [], []
    for c in classes:
        imgs = domain[c]
        idx = torch.randperm(len(imgs), generator=g)[: k_shot + n_query]
        support.append(imgs[idx[:k_shot]])
        query.append(imgs[idx[k_shot:]])
    labels = torch.arange(n_way).repeat_interleave(n_query)
    return torch.cat(support), torch.cat(query), labels
