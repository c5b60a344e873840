"""The three phases of an EvoGrad step, on the step's snapshot of the model:
candidate losses and their lambda-gradients, the validation gradient at
theta* and its projections on the noise, and lambda's gradient. Each phase
catches its own error and hands it to the exchange, so that with several
processes an error on one rank is an error on all, not a hang.

Each phase is handed the step's public options and tensors (``meta``), its
write path (``layout``, a ``layout.NoiseLayout``) and its exchange with
other ranks (``exchange``, a ``parallel.Local``)."""
import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Any, Optional

import torch

from . import closures, ops, options, precision, resolution
from . import parallel as parallel_
from .snapshot import RngSnapshot

# From options.def's EVOGRAD_CONSTANT rows, shared with C++ (why each: there).
DROP_GAP = options.CONSTANTS["drop_gap"]


@dataclass
class Candidates:
    reported: torch.Tensor   # [K] as the closure returned them
    losses: torch.Tensor     # [K] with dropped candidates far above the best
    dloss_dhyper: list       # per candidate: d loss_k / d lambda, or None if dropped
    dropped: int
    narrowest: Optional[torch.dtype] = None  # this rank's first candidate's narrowest float


@dataclass
class Validation:
    loss: float                  # (mean over ranks with parallel="data")
    projections: torch.Tensor    # [K] c_k = <d val / d theta at theta*, eps_k>
    hyper: list                  # the direct term d val / d lambda (None where unused)
    aux: Any
    tensor: Optional[torch.Tensor]  # the loss, detached (the ranks' mean with parallel=)


def check_before_step(meta, layout, exchange):
    """sigma against the storage resolution (over all shards) and whatever
    the layout checks first (FSDP's reduction)."""
    own, counts = None, (0, 0)
    try:
        layout.before_step()
        counts = resolution.unchanged_counts(layout.views, meta.sigma)
    except (ValueError, TypeError) as e:
        own = e
    counts = exchange.resolution(counts, own)
    resolution.check(counts, meta.params[0].dtype, meta.sigma)


def check_replicas(meta, layout, exchange):
    local = torch.cat([parallel_.fingerprint(layout.replicas()),
                       parallel_.fingerprint(meta.hyperparams)])
    table = exchange.collectives.all_gather(local)
    if not torch.equal(table, local.unsqueeze(0).expand_as(table)):
        raise RuntimeError("evograd: the replicas have drifted apart: parameter or "
                           "hyperparameter fingerprints differ across ranks "
                           f"(per rank: {table.tolist()}); every rank must start from the "
                           "same weights and apply the same updates")


def evaluate_candidates(meta, layout, exchange, snap, train_loss_fn, seed: int) -> Candidates:
    """Each candidate written into the parameters in turn; only lambda is
    differentiated (the parameters do not require grad meanwhile). With
    parallel=, the losses are then exchanged."""
    losses, dloss, own = [0.0] * meta.population, [None] * meta.population, None
    lockstep, late = layout.lockstep, None
    watch, first = precision.Watch(), True
    try:
        rng = RngSnapshot(meta.params) if meta.common_random_numbers else None
        snap.set_requires_grad(False)
        for k in range(meta.population):
            if not exchange.owns(k):
                continue
            if k:
                snap.restore_buffers()
            if rng is not None:
                rng.replay()
            with torch.no_grad():
                layout.perturb_into(snap.saved, snap.targets, seed, k, *meta.noise_args)
            # this rank's first forward says what precision the closure runs in
            with watch if first else contextlib.nullcontext():
                loss = train_loss_fn()
            first = False
            losses[k] = closures.check_loss(loss, "training", meta.nonfinite == "drop" or lockstep)
            if math.isfinite(losses[k]):
                dloss[k] = closures.hyper_gradient(loss, meta.hyperparams, meta.allow_unused)
            elif lockstep:
                # discarded; keeps the collectives of FSDP's backward in step
                closures.hyper_gradient(loss, meta.hyperparams, meta.allow_unused)
                if meta.nonfinite == "raise" and late is None:
                    late = closures.not_finite("training", losses[k])
            del loss
            layout.reshard()
        if late is not None:
            raise late
    except Exception as e:  # noqa: BLE001  (re-raised on this rank by the exchange)
        own = e
    losses = exchange.losses(losses, own)
    kept = [v for v in losses if math.isfinite(v)]
    if len(kept) < len(losses) and meta.nonfinite == "raise":
        # Only where a rank's mean took in another rank's non-finite loss.
        raise ValueError("a candidate's training loss is not finite on another rank; "
                         "EvoGrad(..., nonfinite='drop') skips such candidates")
    if not kept:
        raise ValueError("every candidate's training loss is non-finite")
    # A dropped candidate takes a loss so far above the best that its
    # weight and cotangent are exactly zero.
    floor = min(kept) + DROP_GAP * meta.temperature
    dloss = [d if math.isfinite(v) else None for d, v in zip(dloss, losses)]
    return Candidates(
        reported=torch.tensor(losses, dtype=torch.float64),
        losses=torch.tensor([v if math.isfinite(v) else floor for v in losses], dtype=torch.float64),
        dloss_dhyper=dloss, dropped=len(losses) - len(kept), narrowest=watch.narrowest)


def validation_gradient(meta, layout, exchange, snap, val_loss_fn, losses: torch.Tensor,
                        seed: int) -> Validation:
    """theta* written into the parameters, one first-order backward, and
    its projections on the candidates' noise (averaged over ranks with
    parallel='data')."""
    own, c, value, hyper, aux, tensor = None, None, 0.0, [], None, None
    try:
        snap.restore_buffers()
        with torch.no_grad():
            layout.combine_into(snap.saved, snap.targets, losses, meta.temperature, seed,
                                *meta.noise_args)
        snap.set_requires_grad(True)
        val, aux = closures.split_aux(val_loss_fn())
        value = closures.check_loss(val, "validation", allow_nonfinite=layout.lockstep)
        tensor = val.detach()
        if not val.requires_grad:
            raise ValueError("the validation loss does not depend on the parameters")
        params, hyper = layout.gradient(val, meta.hyperparams)
        if not math.isfinite(value):  # reached only in lockstep: the backward came first
            raise closures.not_finite("validation", value)
        del val
        c = layout.project(params, seed, meta.population, *meta.noise_args)
    except Exception as e:  # noqa: BLE001  (re-raised on this rank by the exchange)
        own = e
    if c is None:
        c = torch.zeros(meta.population, dtype=torch.float64)
    c, value = exchange.projections(c, value, own)
    if tensor is not None and exchange.collectives is not None:
        tensor = torch.tensor(value, dtype=tensor.dtype, device=tensor.device)  # the ranks' mean
    return Validation(value, c, hyper, aux, tensor)


def accumulate_hypergradient(meta, exchange, cand: Candidates, val: Validation, factor: float):
    """lambda.grad += factor * sum_k cot_k d loss_k / d lambda + the direct
    term (summed or averaged over ranks with parallel=). A hyperparameter
    nothing used (allow_unused) keeps its .grad, in one process."""
    own, parts, used = None, [], []
    try:
        cot = (ops.loss_cotangent(cand.losses, val.projections, meta.temperature) * factor).tolist()
        with torch.no_grad():
            for j, h in enumerate(meta.hyperparams):
                total, touched = torch.zeros_like(h), False
                for k, dloss in enumerate(cand.dloss_dhyper):
                    if dloss is not None and dloss[j] is not None:
                        total.add_(dloss[j], alpha=cot[k])
                        touched = True
                if val.hyper[j] is not None and exchange.adds_direct_term():
                    total.add_(val.hyper[j])
                    touched = True
                parts.append(total)
                used.append(touched)
    except Exception as e:  # noqa: BLE001  (re-raised on this rank by the exchange)
        own = e
        parts = [torch.zeros_like(h) for h in meta.hyperparams]
    parts = exchange.hypergradient(parts, own)
    if exchange.collectives is None:
        parts = [total if touched else None for total, touched in zip(parts, used)]
    accumulate(meta.hyperparams, parts)


def accumulate(hyperparams, parts):
    """.grad += part, as backward() accumulates; None: the tensor is untouched."""
    with torch.no_grad():
        for h, total in zip(hyperparams, parts):
            if total is None:
                continue
            if h.grad is None:
                h.grad = total  # a tensor of the step's own (callers pass fresh ones)
            else:
                h.grad.add_(total)


COLLAPSE_ESS = options.CONSTANTS["collapse_ess"]


def check_rounding(meta, cand: Candidates):
    """Under autocast each candidate's loss is computed from half-precision
    values and carries their rounding, at least ~u |loss| (the last rounding
    of what it is computed from). Loss differences within that come from
    rounding, not from the noise, and so do the weights."""
    kept = cand.losses[torch.isfinite(cand.reported)]
    if cand.narrowest is None or kept.numel() < 2:
        return
    spread = float(kept.max() - kept.min())
    rounding = precision.UNIT_ROUNDOFF[cand.narrowest] * float(kept.abs().max())
    if 0 < spread < rounding:  # equal losses: collapse() warns
        precision.warn_once(
            meta, f"rounding {cand.narrowest}",
            f"evograd: the candidates' losses differ by less than {precision.name(cand.narrowest)}'s "
            "rounding of the loss (unit roundoff x |loss|; the training closure runs under "
            "torch.autocast): the weights come from rounding, not from the noise (the step's "
            "result.losses shows them). Raise sigma (docs/results.md measures what each "
            "precision needs) or use estimator='jvp'")


def collapse(cand: Candidates, weights: torch.Tensor, step: int):
    """(effective sample size, collapsed): a step whose weights are one-hot
    or whose candidate losses are all equal estimates ~0, and warns."""
    ess = float(1.0 / (weights * weights).sum())
    kept = cand.losses[torch.isfinite(cand.reported)]
    equal = bool(kept.numel() > 1 and torch.all(kept == kept[0]))
    collapsed = ess < COLLAPSE_ESS or equal
    if collapsed:
        warnings.warn(
            f"evograd: step {step} collapsed ("
            + ("all candidate losses are equal: sigma is below the loss's resolution, "
               "e.g. in bfloat16" if equal else
               f"weights {[round(w, 6) for w in weights.tolist()]}, effective sample size "
               f"{ess:.4f} < {COLLAPSE_ESS}: the loss spread is far above temperature")
            + "); its hypergradient is ~0. Raise temperature or lower sigma (or raise "
            "sigma for equal losses)", RuntimeWarning, stacklevel=3)
    return ess, collapsed
