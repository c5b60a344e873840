"""The "lookahead" estimator: T1-T2's hypergradient by a finite difference.

The one-step unrolled hypergradient with inner learning rate alpha is, since
only theta' = theta - alpha grad_theta l_T(theta, lambda) depends on lambda,

    h = -alpha (d/dlambda grad_theta l_T(theta, lambda))^T g',   g' = grad l_V(theta').

That is -alpha |g'| times the lambda-gradient of the directional derivative of
l_T along u = g'/|g'|, which a central difference gives with two first-order
lambda-backwards:

    h ~ -alpha |g'| / (2 s) * (grad_lambda l_T(theta + s u) - grad_lambda l_T(theta - s u)),

exact up to O(s^2) (the third derivatives of l_T along u; a ReLU's kink
crossed within s is the non-smooth version of the same error) plus rounding
~eps/s, with no noise:
DARTS's second-order approximation, taken along the lookahead gradient.
Cost: one training forward and backward at theta (the inner gradient), one
validation forward and backward at theta', two training forwards each with a
lambda-only backward. Memory: theta saved, and g' only until it is written
into the parameters, so one parameter-sized copy beside the passes, as the
paper's estimator holds.

What the official code detaches at theta (MWN's weighting-net input) is what
``evograd.detached`` returns at theta +- s u: the values of the first pass.
"""
import math
from typing import List, Optional

import torch

from . import closures
from .base_values import BaseValues


def norm(tensors) -> float:
    """The 2-norm of a list of tensors, summed in float64 a million elements
    at a time: a float64 copy of a whole large tensor would be the step's
    peak memory."""
    total = 0.0
    for t in tensors:
        for piece in t.detach().reshape(-1).split(1 << 20):
            total += float(piece.double().pow(2).sum())
    return math.sqrt(total)


def default_step(params) -> float:
    """sqrt(eps) * max(1, |theta|): a relative step in the parameters' dtype."""
    eps = torch.finfo(params[0].dtype).eps
    return math.sqrt(eps) * max(1.0, norm(params))


def _zeros_for_none(grads, like) -> List[torch.Tensor]:
    return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, like)]


def _write(snap, base, direction, scale: float):
    """parameters <- base + scale * direction (through the step's aliases)."""
    with torch.no_grad():
        for t, b, d in zip(snap.targets, base, direction):
            torch.add(b, d, alpha=scale, out=t)


def hypergradient(meta, snap, rng, train_loss_fn, val_loss_fn, alpha: float, step: float):
    """Runs the estimator; returns (parts to add to each lambda's .grad or
    None, train losses [at theta, +, -], val loss at theta', its tensor, aux).
    ``rng`` is replayed before each training evaluation: the difference must
    see one draw of dropout or FT noise, the one T1-T2 differentiates."""
    params, hyper = meta.params, meta.hyperparams
    n = len(params)
    base_values = BaseValues()

    # 1. The inner gradient at theta; evograd.detached() records its values.
    snap.set_requires_grad(True)
    rng.replay()
    with base_values:
        loss = train_loss_fn()
    base_loss = closures.check_loss(loss, "training")
    if not loss.requires_grad:
        raise ValueError("the training loss does not depend on the parameters or hyperparameters")
    inner = _zeros_for_none(torch.autograd.grad(loss.reshape(()), params, allow_unused=True),
                            params)
    del loss

    # 2. theta' = theta - alpha * inner; the validation gradient there.
    _write(snap, snap.saved, inner, -alpha)
    del inner
    snap.restore_buffers()
    val, aux = closures.split_aux(val_loss_fn())  # recording ended with the block above
    value = closures.check_loss(val, "validation")
    if not val.requires_grad:
        raise ValueError("the validation loss does not depend on the parameters")
    grads = torch.autograd.grad(val.reshape(()), list(params) + list(hyper), allow_unused=True)
    tensor = val.detach()
    del val
    g = _zeros_for_none(grads[:n], params)
    direct = list(grads[n:])
    del grads
    length = norm(g)

    # 3. The central difference of grad_lambda l_T along u = g / |g|. g is
    # written into the parameters as theta + s u at once and freed, so that
    # the two training passes run beside one saved copy of theta (as the
    # paper's estimator does), not two; theta - s u is that point reflected
    # through theta (exact to rounding, which the difference's own rounding
    # error, ~eps / s, already dominates).
    snap.set_requires_grad(False)
    sides, losses = [], [base_loss]
    differenced = length > 0 and alpha > 0 and math.isfinite(length)
    if differenced:
        _write(snap, snap.saved, g, step / length)
    del g
    if differenced:
        for sign in (1.0, -1.0):
            snap.restore_buffers()
            if sign < 0:
                with torch.no_grad():
                    for t, b in zip(snap.targets, snap.saved):
                        t.sub_(b).neg_().add_(b)
            base_values.replay()
            rng.replay()
            with base_values:
                loss = train_loss_fn()
            losses.append(closures.check_loss(loss, "training"))
            sides.append(closures.hyper_gradient(loss, hyper, meta.allow_unused))
            del loss
    parts: List[Optional[torch.Tensor]] = []
    factor = -alpha * length / (2.0 * step)
    for j, h in enumerate(hyper):
        total = None
        if sides and sides[0][j] is not None and sides[1][j] is not None:
            total = (sides[0][j] - sides[1][j]) * factor
        elif sides and (sides[0][j] is not None or sides[1][j] is not None):
            one = sides[0][j] if sides[0][j] is not None else -sides[1][j]
            total = one * factor
        if direct[j] is not None:
            total = direct[j] if total is None else total + direct[j]
        if total is None and not sides and not meta.allow_unused:
            total = torch.zeros_like(h)  # alpha = 0 or g' = 0: T1-T2 gives exactly 0 too
        parts.append(total)
    return parts, losses, value, tensor, aux
