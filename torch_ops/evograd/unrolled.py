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
    inner: Optional[List[torch.Tensor]]   # grad_theta l_T(theta), when kept (keep_train_grad)
    buffers: Optional[List[torch.Tensor]]  # the buffers after the pass at theta, when kept


def inner_and_validation(meta, snap, rng, train_loss_fn, val_loss_fn, alpha: float,
                         exchange, keep_inner: bool = False) -> Lookahead:
    """Pass 1 at theta, pass 2 at theta'; the parameters are left at theta'.
    ``rng`` is replayed before the training pass: the estimator's own pass
    at theta replays it again, so that both see one draw of dropout or FT
    noise, the one T1-T2 differentiates. With parallel="data" each rank's
    gradients are its shard's, and the exchange makes both the ranks' mean
    (a failure on any rank is an error on all: every rank reaches the same
    exchanges). ``keep_inner``: the inner gradient is returned in
    ``Lookahead.inner`` instead of freed, and the buffers as the training
    forward left them in ``Lookahead.buffers``."""
    params, hyper = meta.params, meta.hyperparams
    base_values = BaseValues()

    # 1. The inner gradient at theta; evograd.detached() records its values.
    # With allow_unused, lambda's gradient is taken in the same backward so
    # that a step that never differentiates in lambda (alpha = 0) still
    # knows which hyperparameters the loss uses.
    own, inner, base_loss, used, narrowest, unused = None, None, 0.0, None, None, []
    try:
        snap.set_requires_grad(True)
        rng.replay()
        with base_values, Watch() as watch:
            loss = train_loss_fn()
        narrowest = watch.narrowest
        base_loss = closures.check_loss(loss, "training", allow_nonfinite=snap.layout.lockstep)
        if not loss.requires_grad:
            raise ValueError("the training loss does not depend on the parameters or "
                             "hyperparameters")
        inner, unused, grads = _gradient(snap.layout, loss, params, hyper, meta.allow_unused)
        del loss
        used = [g is not None for g in grads] if meta.allow_unused else None
        del grads
        _check_finite("training", base_loss)
    except Exception as e:  # noqa: BLE001  (re-raised on this rank by the exchange)
        own = e
    inner = exchange.mean_gradient(inner, params, own, "the inner gradient")

    # 2. theta' = theta - alpha * inner; the validation gradient there.
    own, g, direct, value, tensor, aux = None, None, [None] * len(hyper), 0.0, None, None
    kept_buffers = None
    try:
        write(snap, snap.saved, inner, -alpha)
        # kept: a parameter the loss does not use keeps its .grad, as after
        # backward() (in one process; with ranks the mean is everyone's)
        inner = None if not keep_inner else [
            None if u and exchange.collectives is None else t for t, u in zip(inner, unused)]
        if keep_inner:  # as the loop's skipped forward would leave them (BatchNorm's statistics)
            kept_buffers = [b.detach().clone() for b in snap.buffer_targets]
        snap.restore_buffers()
        val, aux = closures.split_aux(val_loss_fn())  # recording ended with the block above
        value = closures.check_loss(val, "validation", allow_nonfinite=snap.layout.lockstep)
        if not val.requires_grad:
            raise ValueError("the validation loss does not depend on the parameters")
        tensor = val.detach()
        g, _, direct = _gradient(snap.layout, val, params, hyper, True)
        del val
        _check_finite("validation", value)
    except Exception as e:  # noqa: BLE001
        own = e
    g = exchange.mean_gradient(g, params, own, "the validation gradient")
    length = math.sqrt(exchange.total(norm(g) ** 2))  # FSDP: each rank holds some rows
    return Lookahead(base_loss, g, length, direct, used, value, tensor, aux, base_values,
                     narrowest, inner, kept_buffers)


def _gradient(layout, loss, params, hyper, with_hyper: bool):
    """d loss / d parameters (zeros where unused, with which were) and
    d loss / d lambda (None where unused; asked for only ``with_hyper``).
    An FSDP model's comes from FSDP's own backward: this rank's rows of the
    ranks' mean."""
    if layout.sharded:
        grads, lam = layout.gradient(loss, hyper)
        return grads, [False] * len(params), lam
    wrt = list(params) + (list(hyper) if with_hyper else [])
    grads = torch.autograd.grad(loss.reshape(()), wrt, allow_unused=True)
    n = len(params)
    return zeros_for_none(grads[:n], params), [g is None for g in grads[:n]], list(grads[n:])


def _check_finite(what: str, value: float):
    # reached with a loss that is not finite only in lockstep (FSDP), whose
    # backward must run on every rank first
    if not math.isfinite(value):
        raise closures.not_finite(what, value)


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


def finish(meta, exchange, through, run: Lookahead, ran: bool, losses: List[float],
           count: int, own: Optional[BaseException]):
    """combine(), then the ranks' mean of the parts and of the ``count``
    losses reported (one exchange of the N lambda-gradient values; the
    identity in one process). ``count`` is the same on every rank (it
    depends on g', their mean). Returns the parts and the StepResult's
    fields."""
    parts = [None] * len(meta.hyperparams)
    if own is None:
        try:
            parts = combine(meta, through, run, ran)
        except Exception as e:  # noqa: BLE001
            own = e
    mine = losses if own is None and len(losses) == count else [0.0] * count
    parts, scalars = exchange.mean_parts(parts, meta.hyperparams, mine + [run.value], own)
    value = scalars[-1]
    tensor = run.tensor
    if tensor is not None and exchange.collectives is not None:
        tensor = torch.tensor(value, dtype=tensor.dtype, device=tensor.device)  # the ranks' mean
    reported = scalars[:-1] if exchange.collectives is not None else losses
    return parts, torch.tensor(reported, dtype=torch.float64), value, tensor


def leave_for_update(meta, setting, run: Lookahead):
    """keep_train_grad: grad_theta l_T(theta, lambda), the ranks' mean with
    parallel="data", accumulated into the parameters' .grad as backward()
    would, for the model's optimiser to step on (the model's own forward and
    backward are then skipped); and the buffers as that training forward
    left them (BatchNorm's running statistics, which the skipped forward
    would have updated), written as the snapshot writes them. After the
    step only: a step that fails leaves the model as it found it."""
    inner, layout = run.inner, setting.layout
    if inner is None:
        return
    with torch.no_grad():
        for b, v in zip(setting.buffers, run.buffers):
            b.data.copy_(v)
        for i, (p, g) in enumerate(zip(meta.params, inner)):
            if g is None:
                continue
            if g.stride() != layout.views[i].stride():  # e.g. expanded: .grad gets p's layout
                g = torch.empty_like(layout.views[i]).copy_(g)
            g = layout.as_grad(i, g)
            if p.grad is None:
                p.grad = g
            else:
                p.grad.add_(g)


def finite_direction(run: Lookahead, alpha: float) -> bool:
    """Whether there is a derivative to take: alpha > 0 and 0 < |g'| < inf."""
    return run.length > 0 and alpha > 0 and math.isfinite(run.length)
