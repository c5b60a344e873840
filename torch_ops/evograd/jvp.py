"""The "jvp" estimator: T1-T2's hypergradient, exactly, without the unrolled
graph.

With u = g'/|g'| (unrolled.py derives h), h's part through theta' is
-alpha |g'| grad_lambda (u . grad_theta l_T(theta, lambda)). Forward mode
puts u on the model's parameters as their tangent, so that one training
forward at theta also gives the loss's directional derivative t(lambda) =
u . grad_theta l_T; one reverse pass from t to lambda finishes it. No
difference is taken: there is no step to choose, nothing a ReLU's or a
max-pool's switch can break, and no rounding amplified by 1/s. What the
closure detaches (``.detach()``, ``.data``) carries no tangent: a constant,
as in T1-T2. second_order.py holds the few torch functions whose forward-mode
formulas need rewriting for the reverse pass.

Cost: the two shared passes, then one training forward carrying tangents
(about two forwards' work) and one backward to lambda that, like the
lookahead's sides, never computes parameter gradients. Memory: theta saved
until the parameters hold it again, then g' (the tangents) alone: one
parameter-sized copy beside the passes, as the other estimators hold.
"""
from typing import List, Optional

import torch
from torch.autograd import forward_ad

from . import closures, phases, precision, second_order, tangents, unrolled
from .result import StepResult
from .snapshot import RngSnapshot


def check_model(owner) -> None:
    if owner is None:
        raise ValueError("estimator='jvp' puts tangents on the model's module attributes: pass "
                         "the model as params, or module=, the model that holds the tensors")


def _through(meta, setting, snap, rng, train_loss_fn, run, alpha: float):
    """The part through theta' and the training loss of the pass."""
    unrolled.put_back(snap)
    snap.release_values()  # the tangents go on module attributes: theta is not written again
    snap.restore_buffers()
    snap.set_requires_grad(False)
    direction = run.g
    run.g = None
    for i, d in enumerate(direction):  # not in place: autograd may return a gradient expanded
        direction[i] = d / run.length
        del d  # the undivided tensor goes now, not at the end of the pass
    run.base_values.replay()
    rng.replay()
    # FSDP: the whole parameters stay gathered until lambda's gradient is taken
    with setting.layout.whole(setting.owner, direction) as (held, whole):
        del direction
        with forward_ad.dual_level():
            with tangents.along(setting.owner, held, whole), \
                    second_order.second_order_safe(meta.params), run.base_values:
                loss = train_loss_fn()
            value = closures.check_loss(loss, "training")
            t = tangents.tangent(loss)
            del loss, whole
        if t is None:  # the loss does not move with theta in this pass
            return None, value
        grads = closures.hyper_gradient(t, meta.hyperparams, meta.allow_unused)
    factor = -alpha * run.length
    return [None if g is None else g * factor for g in grads], value


def _warn_half_precision(meta, narrowest):
    precision.warn_once(
        meta, f"jvp {narrowest}",
        f"evograd: the closures compute in {precision.name(narrowest)} (torch.autocast): "
        "estimator='jvp' gives T1-T2's hypergradient under that autocast, which half "
        "precision can move away from float32's (docs/results.md: MWN's norm 0.74x in "
        "bfloat16, LFT's cosine 0.95). EvoGrad(..., autocast=False) runs the step in float32 "
        "whatever the closures enter; autocast=True keeps autocast without this warning")


def step(meta, setting, train_loss_fn, val_loss_fn, seed: int) -> StepResult:
    alpha = meta.inner_lr
    with setting.snapshot() as snap:
        rng = RngSnapshot(meta.params)
        run = unrolled.inner_and_validation(meta, snap, rng, train_loss_fn, val_loss_fn, alpha,
                                            setting.exchange, meta.keep_train_grad)
        if run.narrowest is not None and meta.autocast is None:
            _warn_half_precision(meta, run.narrowest)
        losses: List[float] = [run.base_loss]
        through: Optional[List[Optional[torch.Tensor]]] = None
        ran, own = unrolled.finite_direction(run, alpha), None
        if ran:
            try:
                through, value = _through(meta, setting, snap, rng, train_loss_fn, run, alpha)
                losses.append(value)
            except Exception as e:  # noqa: BLE001  (re-raised on this rank by the exchange)
                own = e
        parts, reported, value, tensor = unrolled.finish(
            meta, setting.exchange, through or [None] * len(meta.hyperparams), run,
            through is not None, losses, 2 if ran else 1, own)
    unrolled.leave_for_update(meta, setting, run)
    phases.accumulate(meta.hyperparams, [None if t is None else t.detach() for t in parts])
    return StepResult(value, reported, torch.zeros(0, dtype=torch.float64), seed, 0, run.aux,
                      tensor, float("nan"), False)
