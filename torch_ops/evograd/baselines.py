"""Plain-PyTorch meta-steps for A/B comparisons and tests.

Both take functional closures: ``train_loss_fn(params)`` and
``val_loss_fn(params)`` receive a list of tensors standing in for the
perturbed parameters (use ``torch.func.functional_call`` or write the model
functionally). Both accumulate into each hyperparameter's ``.grad``.
"""
from typing import Callable, List, Optional, Sequence

import torch

from . import functional

LossFn = Callable[[List[torch.Tensor]], torch.Tensor]


def t1t2_step(params: Sequence[torch.Tensor], hyperparams: Sequence[torch.Tensor],
              train_loss_fn: LossFn, val_loss_fn: LossFn, lr: float) -> torch.Tensor:
    """The one-step unrolled second-order hypergradient (T1-T2, as MWN, LFT and
    MetaXL do it): fast weights ``theta - lr * grad l_T(theta, lambda)`` built
    with ``create_graph=True``, validation loss through them, backward to
    lambda. Returns the validation loss (detached)."""
    params, hyperparams = list(params), list(hyperparams)
    train = train_loss_fn(params)
    grads = torch.autograd.grad(train, params, create_graph=True, allow_unused=True)
    fast = [p if g is None else p - lr * g for p, g in zip(params, grads)]
    val = val_loss_fn(fast)
    hyper_grads = torch.autograd.grad(val, hyperparams, allow_unused=True)
    with torch.no_grad():
        for h, g in zip(hyperparams, hyper_grads):
            if g is None:
                continue
            if h.grad is None:
                h.grad = g.detach().clone()
            else:
                h.grad.add_(g)
    return val.detach()


def reference_evograd_step(params: Sequence[torch.Tensor], hyperparams: Sequence[torch.Tensor],
                           train_loss_fn: LossFn, val_loss_fn: LossFn, population: int = 2,
                           sigma: float = 1e-3, temperature: float = 0.05,
                           noise: Optional[Sequence[Sequence[torch.Tensor]]] = None,
                           generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """EvoGrad as written in the paper's code: K full candidate copies, stacked
    losses, softmax, weighted sum of the copies, one backward.

    ``noise``: K lists of tensors shaped like ``params`` (e.g. from
    ``evograd.functional.noise``); by default Rademacher noise from
    ``generator``. Returns the validation loss (detached)."""
    base = [p.detach() for p in params]
    if noise is None:
        noise = [[sigma * (torch.randint(0, 2, p.shape, generator=generator, dtype=p.dtype,
                                         device=p.device) * 2 - 1) for p in base]
                 for _ in range(population)]
    if len(noise) != population:
        raise ValueError(f"noise has {len(noise)} candidates, population is {population}")
    thetas = [[b + e for b, e in zip(base, eps)] for eps in noise]
    losses = torch.stack([train_loss_fn(theta).reshape(()) for theta in thetas])
    w = torch.softmax(-losses / temperature, dim=0)
    theta_star = [sum(w[k] * thetas[k][i] for k in range(population)) for i in range(len(base))]
    val = val_loss_fn(theta_star)
    val.backward(inputs=list(hyperparams))
    return val.detach()


def reference_noise(params: Sequence[torch.Tensor], seed: int, population: int, sigma: float,
                    noise: str = "sign", antithetic: bool = False):
    """The plugin's own noise for all K candidates, to feed the reference step."""
    return [functional.noise(params, seed, k, sigma, noise, antithetic) for k in range(population)]
