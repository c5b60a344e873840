"""sigma against the parameters' storage resolution: a sigma that no
element can hold would make every candidate equal theta and the
hypergradient silently zero."""
import warnings
from typing import Tuple

import torch


def unchanged_counts(params, sigma) -> Tuple[int, int]:
    """How many elements sigma leaves unchanged when added, of how many."""
    unchanged = total = 0
    with torch.no_grad():
        for p in params:
            if p.numel():
                unchanged += int(((p + sigma).to(p.dtype) == p).sum())
                total += p.numel()
    return unchanged, total


def check(counts: Tuple[int, int], dtype, sigma):
    """Raises when sigma is below the storage resolution of every perturbed
    element; warns when that is so for most of them."""
    unchanged, total = counts
    if total and unchanged == total:
        raise ValueError(f"sigma={sigma:g} is below the {dtype} resolution of every "
                         "perturbed parameter: all candidates would equal theta; increase sigma")
    if total and unchanged > total // 2:
        warnings.warn(f"sigma={sigma:g} vanishes in {unchanged} of {total} perturbed parameters "
                      f"({dtype} resolution); the hypergradient sees only the rest",
                      RuntimeWarning, stacklevel=4)
