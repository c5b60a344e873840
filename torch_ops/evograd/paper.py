"""The paper's estimator ("evograd"): K perturbed candidates weighted by
softmax(-loss / tau), one first-order backward on the validation loss at
their combination. Its phases (and what ranks exchange) are in phases.py."""
from . import ops, phases
from .result import StepResult


def step(meta, setting, train_loss_fn, val_loss_fn, seed: int) -> StepResult:
    factor = meta.hypergradient_scale
    phases.check_before_step(meta, setting.layout, setting.exchange)
    with setting.snapshot() as snap:
        cand = phases.evaluate_candidates(meta, setting.layout, setting.exchange, snap,
                                          train_loss_fn, seed)
        weights = ops.weights(cand.losses, meta.temperature)
        val = phases.validation_gradient(meta, setting.layout, setting.exchange, snap,
                                         val_loss_fn, cand.losses, seed)
        phases.accumulate_hypergradient(meta, setting.exchange, cand, val, factor)
    weights = weights.detach()
    phases.check_rounding(meta, cand)
    ess, collapsed = phases.collapse(cand, weights, meta.steps_taken)
    return StepResult(val.loss, cand.reported, weights, seed, cand.dropped, val.aux,
                      val.tensor, ess, collapsed)
