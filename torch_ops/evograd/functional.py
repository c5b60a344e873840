"""EvoGrad for code that already passes parameters functionally
(``torch.func.functional_call``, ``higher``): the K candidates as parameter
lists, and the differentiable combination theta*.

    cands = evograd.functional.candidates(params, seed, K, sigma)
    losses = torch.stack([train_loss(c) for c in cands])   # graphs to lambda
    theta_star = evograd.functional.combine(params, losses, tau, seed, sigma)
    val_loss(theta_star).backward()                       # lambda.grad filled

This keeps K graphs alive at once; ``evograd.EvoGrad`` avoids that.
"""
from typing import List, Sequence

import torch

from . import ops


def _detached(params):
    return [p.detach() for p in ops._tensor_list("params", params)]


def noise(params: Sequence[torch.Tensor], seed: int, k: int, sigma: float,
          noise: str = "sign", antithetic: bool = False) -> List[torch.Tensor]:
    """``eps_k`` shaped like ``params`` (exactly what candidate k adds)."""
    zeros = [torch.zeros_like(p) for p in _detached(params)]
    with torch.no_grad():
        return ops.perturb(zeros, seed, k, sigma, noise, antithetic)


def candidates(params: Sequence[torch.Tensor], seed: int, population: int, sigma: float,
               noise: str = "sign", antithetic: bool = False) -> List[List[torch.Tensor]]:
    """K lists ``theta + eps_k`` built from detached params (as in the paper)."""
    ops._int("population", population)
    if population < 1:
        raise ValueError(f"population must be >= 1, got {population}")
    if antithetic and population % 2:
        raise ValueError(f"antithetic noise needs an even population, got {population}")
    base = _detached(params)
    with torch.no_grad():
        return [ops.perturb(base, seed, k, sigma, noise, antithetic) for k in range(population)]


def combine(params: Sequence[torch.Tensor], losses: torch.Tensor, temperature: float,
            seed: int, sigma: float, noise: str = "sign",
            antithetic: bool = False) -> List[torch.Tensor]:
    """theta* from detached params, differentiable with respect to ``losses``."""
    return ops.combine(_detached(params), losses, temperature, seed, sigma, noise, antithetic)
