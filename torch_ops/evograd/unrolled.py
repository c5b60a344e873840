"""The two passes T1-T2's estimators share: the inner step and the validation
gradient after it.

The one-step unrolled hypergradient with inner learning rate alpha is, since
only theta' = theta - alpha grad_theta l_T(theta, lambda) depends on lambda,

    h = -alpha (d/dlambda grad_theta l_T(theta, lambda))^T g' + d l_V / d lambda,

with g' = grad l_V(theta'). Both estimators that give it ("lookahead" by a
central difference, "jvp" by forward mode) first need g'; this module
computes it and leaves the parameters at theta' for the caller to put back.
"""
import math
from dataclasses import dataclass
from typing import Any, List, Optional

import torch

from . import closures
from .base_values import BaseValues
from .precision import Watch


def norm(tensors) -> float:
    """The 2-norm of a list of tensors, summed in float64 a million elements
    at a time: a float64 copy of a whole large tensor would be the step's
    peak memory."""
    total = 0.0
    for t in tensors:
        for piece in t.detach().reshape(-1).split(1 << 20):
            total += float(piece.double().pow(2).sum())
    return math.sqrt(total)


def zeros_for_none(grads, like) -> List[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like)]


def write(snap, base, direction, scale: float):
    """parameters <- base + scale * direction (through the step's aliases)."""
    with torch.no_grad():
        for t, b, d in zip(snap.targets, base, direction):
            torch.add(b, d, alpha=scale, out=t)


def put_back(snap):
    """parameters <- theta, bit for bit."""
    with torch.no_grad():
        for t, b in zip(snap.targets, snap.saved):
            t.copy_(b)


@dataclass
class Lookahead:
    base_loss: float                      # l_T(theta)
    g: List[torch.Tensor]                 # grad l_V(theta'), zeros where unused
    length: float                         # |g|
    direct: List[Optional[torch.Tensor]]  # d l_V / d lambda at theta' (None: no direct path)
    used: Optional[List[bool]]            # which lambdas l_T uses (allow_unused only)
    value: float                          # l_V(theta')
    tensor: torch.Tensor                  # l_V(theta'), the closure's detached tensor
    aux: Any
    base_values: BaseValues               # what evograd.detached returned at theta
    narrowest: Optional[torch.dtype]      # the training pass's narrowest float (autocast)


def inner_and_validation(meta, snap, rng, train_loss_fn, val_loss_fn, alpha: float) -> Lookahead:
    """Pass 1 at theta, pass 2 at theta'; the parameters are left at theta'.
    ``rng`` is replayed before the training pass: the estimator's own pass
    at theta replays it again, so that both see one draw of dropout or FT
    noise, the one T1-T2 differentiates."""
    params, hyper = meta.params, meta.hyperparams
    n = len(params)
    base_values = BaseValues()

    # 1. The inner gradient at theta; evograd.detached() records its values.
    # With allow_unused, lambda's gradient is taken in the same backward so
    # that a step that never differentiates in lambda (alpha = 0) still
    # knows which hyperparameters the loss uses.
    snap.set_requires_grad(True)
    rng.replay()
    with base_values, Watch() as watch:
        loss = train_loss_fn()
    base_loss = closures.check_loss(loss, "training")
    if not loss.requires_grad:
        raise ValueError("the training loss does not depend on the parameters or hyperparameters")
    wrt = list(params) + (list(hyper) if meta.allow_unused else [])
    grads = torch.autograd.grad(loss.reshape(()), wrt, allow_unused=True)
    del loss
    used = [g is not None for g in grads[n:]] if meta.allow_unused else None
    inner = zeros_for_none(grads[:n], params)
    del grads

    # 2. theta' = theta - alpha * inner; the validation gradient there.
    write(snap, snap.saved, inner, -alpha)
    del inner
    snap.restore_buffers()
    val, aux = closures.split_aux(val_loss_fn())  # recording ended with the block above
    value = closures.check_loss(val, "validation")
    if not val.requires_grad:
        raise ValueError("the validation loss does not depend on the parameters")
    grads = torch.autograd.grad(val.reshape(()), list(params) + list(hyper), allow_unused=True)
    tensor = val.detach()
    del val
    g = zeros_for_none(grads[:n], params)
    direct = list(grads[n:])
    del grads
    return Lookahead(base_loss, g, norm(g), direct, used, value, tensor, aux, base_values,
                     watch.narrowest)


def combine(meta, through: List[Optional[torch.Tensor]], run: Lookahead, ran: bool):
    """What each hyperparameter's .grad receives: the part through theta'
    (None where it has none) plus the direct part. A step that did not
    differentiate in lambda (alpha = 0, or g' = 0) gives exact zeros, as
    T1-T2 does: for every hyperparameter, or with allow_unused for those the
    training loss uses. A g' that is not finite gives NaN."""
    parts: List[Optional[torch.Tensor]] = []
    overflow = not math.isfinite(run.length) and meta.inner_lr > 0
    for j, h in enumerate(meta.hyperparams):
        total = through[j]
        if overflow and (run.used is None or run.used[j]):
            # g' overflowed (a float16 loss scale): the gradient is not finite,
            # as T1-T2's and backward()'s are, so that GradScaler skips the step
            total = torch.full_like(h, float("nan"))
        if run.direct[j] is not None:
            total = run.direct[j] if total is None else total + run.direct[j]
        if total is None and not ran and (run.used is None or run.used[j]):
            total = torch.zeros_like(h)
        parts.append(total)
    return parts


def finite_direction(run: Lookahead, alpha: float) -> bool:
    """Whether there is a derivative to take: alpha > 0 and 0 < |g'| < inf."""
    return run.length > 0 and alpha > 0 and math.isfinite(run.length)
