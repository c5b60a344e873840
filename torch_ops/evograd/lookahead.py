"""The "lookahead" estimator: T1-T2's hypergradient by a finite difference.

With u = g'/|g'| (unrolled.py derives h), the lambda-gradient of the
directional derivative of l_T along u is taken by a central difference of
two first-order lambda-backwards:

    h ~ -alpha |g'| / (2 s) * (grad_lambda l_T(theta + s u) - grad_lambda l_T(theta - s u)),

exact up to O(s^2) (the third derivatives of l_T along u) plus rounding
~eps/s, with no noise: DARTS's second-order approximation, taken along the
lookahead gradient. Where lambda sits inside a ReLU or max-pool network a
unit or pooling choice that switches within s is a jump in grad_lambda l_T,
and the quotient is then far from the derivative (docs/results.md measures
it); "jvp" has no step. Cost: the two shared passes, then two training
forwards each with a lambda-only backward. Memory: theta saved, and g' only
until it is written into the parameters.

What the official code detaches at theta (MWN's weighting-net input) is what
``evograd.detached`` returns at theta +- s u: the values of the first pass.
"""
import math
from typing import List, Optional

import torch

from . import closures, phases, precision, unrolled
from .result import StepResult
from .snapshot import RngSnapshot


def default_step(params) -> float:
    """sqrt(eps) * max(1, |theta|): a relative step in the parameters' dtype."""
    eps = torch.finfo(params[0].dtype).eps
    return math.sqrt(eps) * max(1.0, unrolled.norm(params))


def _difference(meta, snap, rng, train_loss_fn, run, step: float):
    """grad_lambda l_T at theta + s u and theta - s u, and their losses.
    g' is written into the parameters as theta + s u at once and freed, so
    that the two passes run beside one saved copy of theta; theta - s u is
    that point reflected through theta (exact to rounding, which the
    difference's own rounding error, ~eps / s, already dominates)."""
    unrolled.write(snap, snap.saved, run.g, step / run.length)
    run.g = None
    sides, losses = [], []
    for sign in (1.0, -1.0):
        snap.restore_buffers()
        if sign < 0:
            with torch.no_grad():
                for t, b in zip(snap.targets, snap.saved):
                    t.sub_(b).neg_().add_(b)
        run.base_values.replay()
        rng.replay()
        with run.base_values:
            loss = train_loss_fn()
        losses.append(closures.check_loss(loss, "training"))
        sides.append(closures.hyper_gradient(loss, meta.hyperparams, meta.allow_unused))
        del loss
    return sides, losses


def _check_precision(narrowest, fd: float):
    """Each side's gradient carries the closure's rounding, ~u relative, and
    the two sides differ by ~s times the derivative: the quotient's relative
    error is ~u / s. float32's sqrt(eps) step keeps that ~1e-4; under
    autocast u is 2e-3 (bfloat16) or 2.4e-4 (float16) against the same step,
    and the difference is lost (LFT's FT layers: cosine 0.04 with T1-T2)."""
    if narrowest is None:
        return
    u = precision.UNIT_ROUNDOFF[narrowest]
    raise ValueError(
        f"estimator='lookahead' differences two training gradients {fd:.3g} apart, and the "
        f"training closure computes in {precision.name(narrowest)} (torch.autocast): its "
        f"rounding (~{u:.1e} relative) divided by the step swamps the difference. Use "
        "estimator='jvp', which takes no difference and gives T1-T2's hypergradient under "
        "the same autocast, or run the closures without autocast")


def step(meta, setting, train_loss_fn, val_loss_fn, seed: int) -> StepResult:
    alpha = meta.inner_lr
    fd = meta.fd_step if meta.fd_step is not None else default_step(meta.params)
    with setting.snapshot() as snap:
        rng = RngSnapshot(meta.params)
        run = unrolled.inner_and_validation(meta, snap, rng, train_loss_fn, val_loss_fn, alpha,
                                            setting.exchange, meta.keep_train_grad)
        losses: List[float] = [run.base_loss]
        ran, own = unrolled.finite_direction(run, alpha), None
        through: List[Optional[torch.Tensor]] = [None] * len(meta.hyperparams)
        try:
            _check_precision(run.narrowest, fd)
            snap.set_requires_grad(False)
            if ran:
                sides, more = _difference(meta, snap, rng, train_loss_fn, run, fd)
                losses += more
                factor = -alpha * run.length / (2.0 * fd)
                for j, (plus, minus) in enumerate(zip(*sides)):
                    if plus is not None and minus is not None:
                        through[j] = (plus - minus) * factor
                    elif plus is not None or minus is not None:
                        through[j] = (plus if plus is not None else -minus) * factor
        except Exception as e:  # noqa: BLE001  (re-raised on this rank by the exchange)
            own = e
        parts, reported, value, tensor = unrolled.finish(meta, setting.exchange, through, run,
                                                         ran, losses, 3 if ran else 1, own)
    unrolled.leave_for_update(meta, setting, run)
    phases.accumulate(meta.hyperparams, [None if t is None else t.detach() for t in parts])
    return StepResult(value, reported, torch.zeros(0, dtype=torch.float64), seed, 0, run.aux,
                      tensor, float("nan"), False)
