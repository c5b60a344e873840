"""``EvoGrad``: one memory-lean meta-step over a model's own parameters.

For each candidate k the noise is written straight into the parameters'
storage, the user's training-loss closure runs, and only ``d loss_k / d
lambda`` is taken, so one small graph lives at a time (the parameters do not
require grad meanwhile). Then theta* is written in, the validation closure
runs, and one first-order backward gives ``g``; the operators turn ``g`` into
the candidate-loss cotangent and lambda receives its gradient. The model's
parameters, their ``.grad`` and its buffers are put back bit for bit, also
when a closure raises.
"""
import contextlib
import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from . import lookahead, ops
from . import parallel as parallel_
from . import shards
from .seeds import SCHEDULES, default_base_seed, step_seed

TensorsLike = Union[nn.Module, torch.Tensor, Iterable[torch.Tensor]]

# How a step estimates the hypergradient (docs/design.md derives each):
#   "evograd"    the paper's: K perturbed candidates, softmax(-loss/tau) weights,
#                one validation backward at their combination;
#   "lookahead"  T1-T2's one-step unrolled hypergradient by a central finite
#                difference along the validation gradient after the inner step
#                (deterministic; needs inner_lr).
ESTIMATORS = ("evograd", "lookahead")


@dataclass
class StepResult:
    val_loss: float           # validation loss at theta*
    losses: torch.Tensor      # [K] candidate training losses (float64, CPU; dropped ones NaN/inf)
    weights: torch.Tensor     # [K] softmax(-losses / temperature); 0 for dropped candidates
    seed: int                 # noise seed used by this step
    dropped: int = 0          # candidates with a non-finite loss (nonfinite="drop")
    aux: Any = None           # what the validation closure returned after its loss, if anything
    val_loss_tensor: Optional[torch.Tensor] = None  # val_loss as the closure's detached tensor
    ess: float = float("nan")  # effective sample size of the weights, 1 / sum(w_k^2), in [1, K]
    collapsed: bool = False   # ess < COLLAPSE_ESS or all losses equal: the estimate is ~0 (warned)


# Below this effective sample size the weights are (numerically) one-hot: for
# K = 2, ess = 1 / (1 - 2 w (1 - w)) and the estimate's factor w (1 - w) is
# then under 0.5% of its largest value 1/4, so lambda.grad is ~0 however the
# validation loss depends on theta. Such steps are reported and warned about.
COLLAPSE_ESS = 1.01


# exp(-x) is exactly 0.0 in float64 beyond x ~ 745: a loss this far above the
# best one gets weight 0 and cotangent 0, bit for bit.
_DROP_GAP = 800.0


def _as_tensors(name: str, obj: TensorsLike) -> List[torch.Tensor]:
    if isinstance(obj, nn.Module):
        return list(obj.parameters())
    if isinstance(obj, torch.Tensor):
        return [obj]
    if obj is None:
        raise TypeError(f"{name} must be a module, a tensor or a list of tensors, got None")
    try:
        out = list(obj)
    except TypeError:
        raise TypeError(f"{name} must be a module, a tensor or a list of tensors, "
                        f"got {type(obj).__name__}") from None
    for i, t in enumerate(out):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(t).__name__}")
    return out


def _hyper_tensors(obj: TensorsLike) -> List[torch.Tensor]:
    """lambda: a module's parameters and its floating buffers that require
    grad (MetaModule-style nets, like the official MWN VNet, keep their
    weights as such buffers), each once; or the tensors given."""
    if not isinstance(obj, nn.Module):
        return _as_tensors("hyperparams", obj)
    out, seen = [], set()
    for t in itertools.chain(obj.parameters(),
                             (b for b in obj.buffers() if b.is_floating_point() and b.requires_grad)):
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    if not out:
        raise ValueError(f"no hyperparameters: {type(obj).__name__} has no parameters and no "
                         "floating buffers with requires_grad=True")
    return out


def _split_aux(out) -> Tuple[Any, Any]:
    """A closure's result: a loss, or (loss, *aux) for logging (logits, say)."""
    if isinstance(out, (tuple, list)) and out:
        rest = tuple(out[1:])
        return out[0], (rest[0] if len(rest) == 1 else rest) if rest else None
    return out, None


def _module_tensors(module: nn.Module, hyperparams: Sequence[torch.Tensor]):
    """What a step perturbs and what it restores in ``module``.

    Perturbed: every floating tensor that requires grad, parameter or buffer
    (MetaModule-style models, as in the official MWN code, register their
    weights as buffers that require grad), each once, except the
    hyperparameters. Restored: the other buffers (BatchNorm statistics)."""
    skip = {id(h) for h in hyperparams}
    perturbed = []
    for t in itertools.chain(module.parameters(), module.buffers()):
        if id(t) in skip or not (t.is_floating_point() and t.requires_grad):
            continue
        skip.add(id(t))
        perturbed.append(t)
    restored = [b for b in module.buffers() if id(b) not in skip]
    return perturbed, restored


def _storage(t: torch.Tensor):
    """Where a tensor's storage lives: equal for views of one storage."""
    storage = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    return t.device, storage.data_ptr()


def _restored_buffers(buffers, params, hyperparams):
    """Buffers to restore, each once, less those that share storage with a
    perturbed tensor (restored as such) or a hyperparameter."""
    taken = {_storage(t) for t in itertools.chain(params, hyperparams) if t.numel()}
    kept, seen = [], set()
    for b in buffers:
        if id(b) in seen or (b.numel() and _storage(b) in taken):
            continue
        seen.add(id(b))
        kept.append(b)
    return kept


def _check_loss(loss, which: str, allow_nonfinite: bool = False) -> float:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"the {which} loss closure must return a tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"the {which} loss must be a scalar, got shape {tuple(loss.shape)}")
    if not loss.is_floating_point():
        raise TypeError(f"the {which} loss must be floating point, got {loss.dtype}")
    value = float(loss.detach())
    if not math.isfinite(value) and not allow_nonfinite:
        raise _not_finite(which, value)
    return value


def _not_finite(which: str, value: float) -> ValueError:
    return ValueError(f"the {which} loss is not finite ({value}); "
                      "EvoGrad(..., nonfinite='drop') skips such candidates")


def _resolution_counts(params, sigma) -> Tuple[int, int]:
    """How many elements sigma leaves unchanged when added, of how many."""
    unchanged = total = 0
    with torch.no_grad():
        for p in params:
            if p.numel():
                unchanged += int(((p + sigma).to(p.dtype) == p).sum())
                total += p.numel()
    return unchanged, total


def _check_sigma_resolution(counts: Tuple[int, int], dtype, sigma):
    """Raises when sigma is below the storage resolution of every perturbed
    element (the step would see identical candidates and return a zero
    hypergradient); warns when that is so for most of them."""
    unchanged, total = counts
    if total and unchanged == total:
        raise ValueError(f"sigma={sigma:g} is below the {dtype} resolution of every "
                         "perturbed parameter: all candidates would equal theta; increase sigma")
    if total and unchanged > total // 2:
        warnings.warn(f"sigma={sigma:g} vanishes in {unchanged} of {total} perturbed parameters "
                      f"({dtype} resolution); the hypergradient sees only the rest",
                      RuntimeWarning, stacklevel=4)


class _Snapshot:
    """What a step changes about the model, to put back afterwards: the
    parameters' values (their local shards for FSDP), ``.grad`` and
    ``requires_grad``, and the buffers."""

    def __init__(self, layout: "shards.Layout", buffers):
        self.layout, self.buffers = layout, buffers
        layout.reshard()  # a forward of the caller's may have left FSDP's root gathered
        self.params, self.views = layout.owners, layout.views
        # The step writes the parameters and buffers through .data aliases,
        # which leave their autograd version counters alone: every value is
        # put back bit for bit before the step returns, so a graph recorded
        # before the step (LFT builds its auxiliary loss before the meta
        # block and backpropagates it after) stays valid and exact.
        self.targets = [v.data for v in self.views]
        self.buffer_targets = [b.data for b in buffers]
        with torch.no_grad():
            self.saved = [v.detach().clone() for v in self.views]
            self.saved_buffers = [b.detach().clone() for b in buffers]
        self.grads = [p.grad for p in self.params]
        self.flags = [p.requires_grad for p in self.params]
        for p in self.params:  # closures calling backward() must not touch these
            p.grad = None

    def restore_buffers(self):
        with torch.no_grad():
            for b, s in zip(self.buffer_targets, self.saved_buffers):
                b.copy_(s)

    def set_requires_grad(self, flag: bool):
        for p in self.params:
            p.requires_grad_(flag)

    def freeze(self, tensors):
        """Tensors neither perturbed nor hyperparameters (the encoder below a
        perturbed head) record nothing during the step."""
        self.frozen = [t for t in tensors if t.requires_grad]
        for t in self.frozen:
            t.requires_grad_(False)

    def restore(self):
        self.layout.reshard()
        with torch.no_grad():
            for p, t, s, g, f in zip(self.params, self.targets, self.saved, self.grads, self.flags):
                p.requires_grad_(f)
                t.copy_(s)
                p.grad = g
        for t in getattr(self, "frozen", ()):
            t.requires_grad_(True)
        self.restore_buffers()


class _RngSnapshot:
    """Torch RNG states (CPU and the parameters' CUDA devices) to replay per candidate."""

    def __init__(self, params):
        self.cpu = torch.get_rng_state()
        self.cuda = {}
        for p in params:
            if p.is_cuda and p.device.index not in self.cuda:
                self.cuda[p.device.index] = torch.cuda.get_rng_state(p.device)

    def replay(self):
        torch.set_rng_state(self.cpu)
        for index, state in self.cuda.items():
            torch.cuda.set_rng_state(state, index)


class EvoGrad:
    """EvoGrad hypergradients for ``hyperparams`` from perturbations of ``params``.

    Args:
        params: a module or an explicit list of tensors. A module: each of its
            floating tensors that requires grad, parameter or buffer (MetaModule
            weights), is perturbed once, hyperparameters excepted; its other
            buffers are restored after each step.
        hyperparams: lambda: a module, a tensor or a list of leaf tensors that
            require grad.
        population: K >= 2 candidates per step.
        sigma: noise scale; ``eps = sigma * z``.
        temperature: tau in ``softmax(-loss / tau)``.
        noise: ``"sign"`` (Rademacher, as in the paper's experiments) or ``"gauss"``.
        antithetic: candidate 2j+1 uses ``-eps`` of candidate 2j (K even).
        seed: base noise seed; step t uses ``step_seed(seed, t, seed_schedule)``.
            ``None``: derived from ``torch.initial_seed()`` without drawing from
            torch's generator (see ``evograd.seeds.default_base_seed``).
        seed_schedule: ``"mixed"`` (unrelated seeds per step and per base) or
            ``"consecutive"`` (``seed + t``, to reproduce results recorded with
            evograd's first releases).
        common_random_numbers: replay the same torch RNG state for every
            candidate, so dropout masks and other random layers are shared and
            loss differences come from the noise alone (lower variance).
        buffers: tensors restored after each step; default: the module's
            buffers (``params`` or ``module``).
        module: with a list of ``params`` (only some of a model's weights, as
            LFT and MetaXL perturb), the model whose buffers are restored. A
            list with neither ``module`` nor ``buffers`` warns: the K + 1
            forwards of each step would change BatchNorm statistics for good.
        scale: ``None`` (EvoGrad's own hypergradient) or ``"t1t2"``: the part
            through the candidates is multiplied by ``tau * inner_lr /
            (sigma**2 * c)``, ``c = 1 - 1/K`` (1 with antithetic noise), so that
            for small sigma its expectation equals the one-step unrolled
            (T1-T2) hypergradient with inner learning rate ``inner_lr``. Use it
            to keep a meta-optimiser's settings (learning rate, weight decay)
            tuned for T1-T2; EvoGrad's own scale is smaller by that factor.
        inner_lr: the inner (model) learning rate alpha, for ``scale="t1t2"``:
            a number >= 0 (0, as at the start of a linear warm-up, gives a zero
            part through the candidates, as T1-T2 does), or the model's
            optimiser, whose learning rate (one for all its param groups) is
            read at every step, so that any LR scheduler is followed. May be
            assigned between steps (``meta.inner_lr = lr``) or passed per step
            (``step(..., inner_lr=lr)``); saved by ``state_dict``.
        estimator: one of ``ESTIMATORS``: ``"evograd"`` (the paper's, the
            default) or ``"lookahead"`` (T1-T2's hypergradient with inner
            learning rate ``inner_lr``, by a central finite difference of step
            ``fd_step`` along the validation gradient at the inner step's
            weights: no noise, no temperature; population, sigma, temperature,
            noise and scale do not apply). Closures that detach a value at
            theta (MWN's weighting-net input) should use ``evograd.detached``.
        fd_step: the lookahead's difference step, a length in parameter space
            (the perturbation is ``fd_step * g/|g|``). ``None``: ``sqrt(eps) *
            max(1, |theta|)`` for the parameters' dtype (eps its machine
            epsilon), a relative step small enough that ReLU kinks are rarely
            crossed and large enough against rounding.
        allow_unused: as in ``torch.autograd.grad``: a hyperparameter that no
            loss of a step depends on gets no gradient (its ``.grad`` is left
            as it was, ``None`` if it had none) instead of an error. (With
            ``parallel``, the ranks' sums make it a zero gradient.)
        nonfinite: what a candidate with a NaN/inf training loss does:
            ``"raise"`` (default: ValueError, model restored) or ``"drop"``
            (weight exactly 0, its lambda-gradient ignored; an error only if
            every candidate is non-finite).
        parallel: ``None`` (one process), ``"data"`` (each rank's closures see
            its shard of the batch; the objective is the mean over ranks) or
            ``"candidates"`` (every rank sees the same batches; rank r
            evaluates candidates k = r, r + world, ...). Needs
            ``torch.distributed`` initialised; every rank must build EvoGrad
            alike (checked) and call ``step`` together. A step sends K + K + N
            values (K candidates, N hyperparameter elements) plus three
            failure flags, however large the model; see ``evograd.parallel``.
            A model sharded by FSDP2's ``fully_shard`` takes ``"data"``: each
            rank perturbs and projects its own rows with the whole model's
            noise, and the validation gradient comes from FSDP's backward
            (its default mean over ranks; other reductions are refused). Such
            a step also sends 2 counts for sigma's resolution check, and FSDP
            moves what it always moves: an all-gather per forward and one
            reduce-scatter.
        process_group: the group to use with ``parallel`` (default: the world).
        check_replicas: with ``parallel``, each step first compares a
            fingerprint of the parameters and hyperparameters across ranks
            (one gather of 4 int64 values: the exact bits, not a float sum) and
            raises if replicas have drifted apart.
    """

    def __init__(self, params: TensorsLike, hyperparams: TensorsLike, population: int = 2,
                 sigma: float = 1e-3, temperature: float = 0.05, noise: str = "sign",
                 antithetic: bool = False, seed: Optional[int] = None,
                 common_random_numbers: bool = False,
                 buffers: Optional[Iterable[torch.Tensor]] = None, nonfinite: str = "raise",
                 module: Optional[nn.Module] = None, scale: Optional[str] = None,
                 inner_lr: Optional[float] = None, seed_schedule: str = "mixed",
                 parallel: Optional[str] = None, process_group=None,
                 check_replicas: bool = False, allow_unused: bool = False,
                 estimator: str = "evograd", fd_step: Optional[float] = None):
        if estimator not in ESTIMATORS:
            raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
        if estimator != "evograd" and parallel is not None:
            raise ValueError(f"estimator={estimator!r} runs in one process; parallel= is for "
                             "the 'evograd' estimator")
        self.estimator = estimator
        self.fd_step = None if fd_step is None else ops._float("fd_step", fd_step)
        if self.fd_step is not None and not (math.isfinite(self.fd_step) and self.fd_step > 0):
            raise ValueError(f"fd_step must be finite and > 0, got {fd_step}")
        self._par = parallel_.make(parallel, process_group)
        self.parallel, self.check_replicas = parallel, bool(check_replicas)
        self.allow_unused = bool(allow_unused)
        own = None
        try:
            self._build(params, hyperparams, population, sigma, temperature, noise, antithetic,
                        seed, common_random_numbers, buffers, nonfinite, module, scale,
                        inner_lr, seed_schedule)
        except (ValueError, TypeError) as e:
            if self._par.collectives is None:
                raise
            own = e
        if self._par.collectives is not None:
            parallel_.agree(self._par.collectives, self._agreed_fields() if own is None else
                            dict.fromkeys(_AGREED, 0.0), own)
            # Every rank draws the same noise: rank 0's base seed.
            self.seed = int(self._par.collectives.broadcast(
                torch.tensor([self.seed], dtype=torch.int64))[0])
            if self._layout.sharded:
                self._par = parallel_.ShardedData(self._par.collectives)
                extents = torch.tensor(self._layout.extents(), dtype=torch.int64).reshape(-1)
                shards.check_tiling(self._par.collectives.all_gather(extents), self.params)
        # DDP reduces gradients in backward hooks and, outside no_sync(),
        # readies its reducer in every forward: the step's own forwards run
        # under no_sync() so that the P-sized all-reduce never happens here.
        owner = params if isinstance(params, nn.Module) else module
        self._ddp = owner if _is_ddp(owner) else None
        self._built = True

    def __setattr__(self, name, value):
        if name in _FIXED and self.__dict__.get("_built"):
            raise AttributeError(
                f"EvoGrad.{name} is fixed at construction (changing it would silently disagree "
                "with the noise, checks and checkpoints already made); build a new EvoGrad. "
                "Only inner_lr may change between steps")
        object.__setattr__(self, name, value)

    @property
    def inner_lr(self) -> Optional[float]:
        """The inner learning rate the next step uses (read from the
        optimiser when one was given)."""
        source = self._inner_lr
        if source is None or isinstance(source, float):
            return source
        return _optimizer_lr(source)

    @inner_lr.setter
    def inner_lr(self, value):
        needed = self.scale == "t1t2" or self.estimator == "lookahead"
        if not needed:
            if value is not None:
                raise ValueError("inner_lr is used only with scale='t1t2' or "
                                 "estimator='lookahead'")
        elif value is None:
            raise ValueError(("estimator='lookahead'" if self.estimator == "lookahead" else
                              "scale='t1t2'") + " needs inner_lr, the model's learning rate "
                             "(a number, or the model's optimiser)")
        elif isinstance(value, torch.optim.Optimizer):
            _optimizer_lr(value)
        else:
            value = _learning_rate("inner_lr", value)
        object.__setattr__(self, "_inner_lr", value)

    @property
    def hypergradient_scale(self) -> float:
        """What the part through the candidates is multiplied by at the next
        step: 1, or ``tau * inner_lr / (sigma**2 * c)`` with scale='t1t2'."""
        if self.scale is None or self.estimator != "evograd":
            return 1.0
        c = 1.0 if self.antithetic else 1.0 - 1.0 / self.population
        return self.temperature * self.inner_lr / (self.sigma ** 2 * c)

    def _agreed_fields(self):
        values = (self.population, self.sigma, self.temperature, self.noise == "gauss",
                  self.antithetic, self.nonfinite == "drop", self.seed_schedule == "consecutive",
                  self.hypergradient_scale, self.common_random_numbers,
                  parallel_.PARALLEL.index(self.parallel), len(self.params),
                  sum(p.numel() for p in self.params), len(self.hyperparams),
                  sum(h.numel() for h in self.hyperparams), self.check_replicas)
        return {name: float(v) for name, v in zip(_AGREED, values)}

    def _build(self, params, hyperparams, population, sigma, temperature, noise, antithetic,
               seed, common_random_numbers, buffers, nonfinite, module, scale, inner_lr,
               seed_schedule):
        self.hyperparams = _hyper_tensors(hyperparams)
        if module is not None and not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
        if module is not None and buffers is not None:
            raise ValueError("pass module= (its buffers are restored) or buffers=, not both")
        if isinstance(params, nn.Module):
            if module is params:
                raise ValueError("module= is for a list of params; EvoGrad(model, hyperparams) "
                                 "already restores the model's buffers")
            if module is not None:
                raise ValueError(
                    f"params is a module ({type(params).__name__}) and module= is another "
                    f"({type(module).__name__}): did you swap params and hyperparams? The "
                    "order is EvoGrad(params, hyperparams, module=model): params are "
                    "perturbed, hyperparams (lambda) receive the gradient")
            self.params, default_buffers = _module_tensors(params, self.hyperparams)
            if not self.params:
                raise ValueError(f"{type(params).__name__} has no floating tensor that requires "
                                 "grad to perturb (parameters, or buffers with requires_grad=True)"
                                 + (" other than the hyperparameters" if self.hyperparams else ""))
        else:
            self.params = _as_tensors("params", params)
            default_buffers = [] if module is None else list(module.buffers())
            if module is None and buffers is None:
                warnings.warn("EvoGrad(list of tensors, ...) restores no buffers: each step's "
                              "train-mode forwards would leave BatchNorm statistics changed. Pass "
                              "module=<the model> to restore its buffers, or buffers=[] if it has "
                              "none", UserWarning, stacklevel=3)
        if self.parallel == "candidates" and any(shards.is_sharded(p) for p in self.params):
            raise ValueError("evograd: an FSDP-sharded model runs every forward on all ranks "
                             "together, so ranks cannot evaluate different candidates; use "
                             "parallel='data'")
        self._layout = shards.Layout(self.params,
                                     self._par.world if self.parallel == "data" else None,
                                     params if isinstance(params, nn.Module) else module)
        chosen = default_buffers if buffers is None else _as_tensors("buffers", buffers)
        self.buffers = _restored_buffers(chosen, self._layout.views, self.hyperparams)
        self.population = ops._int("population", population)
        self.sigma = ops._float("sigma", sigma)
        self.temperature = ops._float("temperature", temperature)
        self.noise = ops._noise(noise)
        self.antithetic = bool(antithetic)
        self.common_random_numbers = bool(common_random_numbers)
        if nonfinite not in ("raise", "drop"):
            raise ValueError(f"nonfinite must be 'raise' or 'drop', got {nonfinite!r}")
        self.nonfinite = nonfinite
        if seed_schedule not in SCHEDULES:
            raise ValueError(f"seed_schedule must be one of {SCHEDULES}, got {seed_schedule!r}")
        self.seed_schedule = seed_schedule
        self._validate()
        if scale not in (None, "t1t2"):
            raise ValueError(f"scale must be None or 't1t2', got {scale!r}")
        self.scale = scale
        self.inner_lr = inner_lr
        # Tensors the closures may touch that are neither perturbed nor
        # hyperparameters: frozen during the step (nothing recorded for them).
        owner = params if isinstance(params, nn.Module) else module
        taken = {id(t) for t in itertools.chain(self.params, self.hyperparams)}
        self._bystanders = [] if owner is None or self._layout.sharded else [
            t for t in itertools.chain(owner.parameters(), owner.buffers())
            if id(t) not in taken and t.requires_grad and t.is_leaf]
        self.seed = default_base_seed() if seed is None else ops._int("seed", seed)
        self.steps_taken = 0

    def _validate(self):
        if self.noise not in ("sign", "gauss"):
            raise ValueError(f"unknown noise {self.noise!r}; expected 'sign' or 'gauss'")
        if self.population < 2:
            raise ValueError(f"population must be >= 2, got {self.population}")
        if self.antithetic and self.population % 2:
            raise ValueError(f"antithetic noise needs an even population, got {self.population}")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError(f"sigma must be finite and > 0, got {self.sigma}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {self.temperature}")
        if not self.params:
            raise ValueError("no parameters to perturb")
        if not self.hyperparams:
            raise ValueError("no hyperparameters")
        for i, p in enumerate(self.params):
            if not p.is_leaf:
                raise ValueError(f"parameter {i} is not a leaf tensor")
        for j, h in enumerate(self.hyperparams):
            if not h.is_floating_point():
                raise TypeError(f"hyperparameter {j} must be floating point, got {h.dtype}")
            if not (h.is_leaf and h.requires_grad):
                raise ValueError(f"hyperparameter {j} must be a leaf tensor that requires grad")
        # dtypes, one device, and no memory shared among the parameters or
        # with the hyperparameters: the operator layer's one check.
        ops.check_perturbable(self._layout.views, self.hyperparams)

    def step(self, train_loss_fn: Callable[[], torch.Tensor],
             val_loss_fn: Callable[[], torch.Tensor],
             inner_lr: Union[float, torch.optim.Optimizer, None] = None) -> StepResult:
        """One meta-step. Accumulates ``d val_loss / d lambda`` into each
        hyperparameter's ``.grad`` (as ``backward()`` would) and returns the
        losses for logging; the model is left exactly as it was found.
        ``val_loss_fn`` may return ``(loss, *aux)`` (e.g. the logits at theta*
        for the meta batch's accuracy); ``aux`` comes back in the result.
        With ``parallel``, every rank must call it, and an error on one rank
        is an error on all (``evograd.parallel.PeerFailed`` on the others).
        ``inner_lr``, if given, becomes ``self.inner_lr`` from this step on.
        A step whose weights collapse (``ess < COLLAPSE_ESS``) or whose
        candidate losses are all equal warns: its estimate is ~0."""
        if not callable(train_loss_fn) or not callable(val_loss_fn):
            raise TypeError("step needs two callables: train_loss_fn() and val_loss_fn()")
        if torch.jit.is_tracing():
            raise RuntimeError("EvoGrad.step cannot be traced: torch.jit.trace would record "
                               "this step's seed and candidate losses as constants. Trace the "
                               "model and call step() from Python, or script the ops")
        if inner_lr is not None:
            self.inner_lr = inner_lr
        factor = self.hypergradient_scale
        seed = step_seed(self.seed, self.steps_taken, self.seed_schedule)
        if self.check_replicas and self._par.collectives is not None:
            self._check_replicas()
        if self.estimator == "lookahead":
            return self._lookahead_step(train_loss_fn, val_loss_fn, seed)
        self._check_before_step()
        snap = _Snapshot(self._layout, self.buffers)
        try:
            snap.freeze(self._bystanders)
            with torch.enable_grad(), self._no_ddp_sync():
                cand = self._evaluate_candidates(snap, train_loss_fn, seed)
                weights = ops.weights(cand.losses, self.temperature)
                val = self._validation_gradient(snap, val_loss_fn, cand.losses, seed)
                self._accumulate_hypergradient(cand, val, factor)
        finally:
            snap.restore()
        self.steps_taken += 1
        weights = weights.detach()
        ess = float(1.0 / (weights * weights).sum())
        kept = cand.losses[torch.isfinite(cand.reported)]
        equal = bool(kept.numel() > 1 and torch.all(kept == kept[0]))
        collapsed = ess < COLLAPSE_ESS or equal
        if collapsed:
            warnings.warn(
                f"evograd: step {self.steps_taken - 1} collapsed ("
                + ("all candidate losses are equal: sigma is below the loss's resolution, "
                   "e.g. in bfloat16" if equal else
                   f"weights {[round(w, 6) for w in weights.tolist()]}, effective sample size "
                   f"{ess:.4f} < {COLLAPSE_ESS}: the loss spread is far above temperature")
                + "); its hypergradient is ~0. Raise temperature or lower sigma (or raise "
                "sigma for equal losses)", RuntimeWarning, stacklevel=2)
        return StepResult(val.loss, cand.reported, weights, seed, cand.dropped, val.aux,
                          val.tensor, ess, collapsed)

    def _lookahead_step(self, train_loss_fn, val_loss_fn, seed: int) -> StepResult:
        if self._layout.sharded:
            raise ValueError("estimator='lookahead' does not run on FSDP-sharded parameters")
        alpha = self.inner_lr
        step = self.fd_step if self.fd_step is not None else lookahead.default_step(self.params)
        snap = _Snapshot(self._layout, self.buffers)
        try:
            snap.freeze(self._bystanders)
            with torch.enable_grad(), self._no_ddp_sync():
                parts, losses, value, tensor, aux = lookahead.hypergradient(
                    self, snap, _RngSnapshot(self.params), train_loss_fn, val_loss_fn, alpha,
                    step, _check_loss, _split_aux)
        finally:
            snap.restore()
        _accumulate(self.hyperparams, [None if t is None else t.detach() for t in parts])
        self.steps_taken += 1
        return StepResult(value, torch.tensor(losses, dtype=torch.float64),
                          torch.zeros(0, dtype=torch.float64), seed, 0, aux, tensor,
                          float("nan"), False)

    def _noise_args(self):
        return self.sigma, self.noise, self.antithetic

    def _check_before_step(self):
        """sigma against the storage resolution (over all shards) and, for
        FSDP, that its backward will average the rows' gradient over ranks.
        With shards, an error on one rank reaches all."""
        own, counts = None, (0, 0)
        try:
            if self._layout.sharded:
                self._layout.check_reduction()
            counts = _resolution_counts(self._layout.views, self.sigma)
        except (ValueError, TypeError) as e:
            own = e
        counts = self._par.resolution(counts, own)
        _check_sigma_resolution(counts, self.params[0].dtype, self.sigma)

    def _no_ddp_sync(self):
        return self._ddp.no_sync() if self._ddp is not None else contextlib.nullcontext()

    def _evaluate_candidates(self, snap: "_Snapshot", train_loss_fn, seed: int) -> "_Candidates":
        """Each candidate written into the parameters in turn; only lambda is
        differentiated (the parameters do not require grad meanwhile). With
        parallel=, the losses are then exchanged."""
        losses, dloss, own = [0.0] * self.population, [None] * self.population, None
        # With FSDP, a lambda-gradient that flows through the model runs
        # collectives: every rank takes every backward, even for a loss that
        # is not finite here, and a local error waits for the exchange.
        lockstep, late = self._layout.sharded, None
        try:
            rng = _RngSnapshot(self.params) if self.common_random_numbers else None
            snap.set_requires_grad(False)
            for k in range(self.population):
                if not self._par.owns(k):
                    continue
                if k:
                    snap.restore_buffers()
                if rng is not None:
                    rng.replay()
                with torch.no_grad():
                    self._layout.perturb_into(snap.saved, snap.targets, seed, k, *self._noise_args())
                loss = train_loss_fn()
                losses[k] = _check_loss(loss, "training", self.nonfinite == "drop" or lockstep)
                if math.isfinite(losses[k]):
                    dloss[k] = self._loss_gradient(loss)
                elif lockstep:
                    self._loss_gradient(loss)  # discarded; keeps FSDP's collectives in step
                    if self.nonfinite == "raise" and late is None:
                        late = _not_finite("training", losses[k])
                del loss
                self._layout.reshard()
            if late is not None:
                raise late
        except Exception as e:  # noqa: BLE001  (re-raised on this rank by the exchange)
            own = e
        losses = self._par.losses(losses, own)
        kept = [v for v in losses if math.isfinite(v)]
        if len(kept) < len(losses) and self.nonfinite == "raise":
            # Only where a rank's mean took in another rank's non-finite loss.
            raise ValueError("a candidate's training loss is not finite on another rank; "
                             "EvoGrad(..., nonfinite='drop') skips such candidates")
        if not kept:
            raise ValueError("every candidate's training loss is non-finite")
        # A dropped candidate takes a loss so far above the best that its
        # weight and cotangent are exactly zero.
        floor = min(kept) + _DROP_GAP * self.temperature
        dloss = [d if math.isfinite(v) else None for d, v in zip(dloss, losses)]
        return _Candidates(
            reported=torch.tensor(losses, dtype=torch.float64),
            losses=torch.tensor([v if math.isfinite(v) else floor for v in losses],
                                dtype=torch.float64),
            dloss_dhyper=dloss, dropped=len(losses) - len(kept))

    def _loss_gradient(self, loss: torch.Tensor):
        """d loss / d lambda (the parameters do not require grad meanwhile);
        None for a hyperparameter it does not use, with allow_unused."""
        hint = "; EvoGrad(..., allow_unused=True) lets such hyperparameters get no gradient"
        if not loss.requires_grad:
            if self.allow_unused:
                return [None] * len(self.hyperparams)
            raise ValueError("the training loss does not depend on the hyperparameters" + hint)
        grads = torch.autograd.grad(loss.reshape(()), self.hyperparams, allow_unused=True)
        for j, g in enumerate(grads):
            if g is None and not self.allow_unused:
                raise ValueError(f"the training loss does not depend on hyperparameter {j}" + hint)
        return grads

    def _validation_gradient(self, snap: "_Snapshot", val_loss_fn, losses: torch.Tensor,
                             seed: int) -> "_Validation":
        """theta* written into the parameters, one first-order backward, and
        its projections on the candidates' noise (averaged over ranks with
        parallel='data')."""
        own, c, value, params, hyper, aux, tensor = None, None, 0.0, [], [], None, None
        try:
            snap.restore_buffers()
            with torch.no_grad():
                self._layout.combine_into(snap.saved, snap.targets, losses, self.temperature,
                                          seed, *self._noise_args())
            snap.set_requires_grad(True)
            val, aux = _split_aux(val_loss_fn())
            value = _check_loss(val, "validation", allow_nonfinite=self._layout.sharded)
            tensor = val.detach()
            if not val.requires_grad:
                raise ValueError("the validation loss does not depend on the parameters")
            if self._layout.sharded:
                # FSDP's backward is collective: take it, then raise
                params, hyper = self._sharded_validation_gradient(val)
                if not math.isfinite(value):
                    raise _not_finite("validation", value)
            else:
                grads = torch.autograd.grad(val.reshape(()), self.params + self.hyperparams,
                                            allow_unused=True)
                n = len(self.params)
                params = [g if g is not None else torch.zeros_like(p)
                          for g, p in zip(grads[:n], self.params)]
                hyper = list(grads[n:])
            del val
            c = self._layout.project(params, seed, self.population, *self._noise_args())
        except Exception as e:  # noqa: BLE001  (re-raised on this rank by the exchange)
            own = e
        if c is None:
            c = torch.zeros(self.population, dtype=torch.float64)
        c, value = self._par.projections(c, value, own)
        if tensor is not None and self._par.collectives is not None:
            tensor = torch.tensor(value, dtype=tensor.dtype, device=tensor.device)  # the ranks' mean
        return _Validation(value, c, hyper, aux, tensor)

    def _sharded_validation_gradient(self, val: torch.Tensor):
        """FSDP's own backward: its reduce-scatter leaves each rank its rows
        of the gradient averaged over ranks (the snapshot puts the
        parameters' ``.grad`` back); the hyperparameters' ``.grad`` is
        read and put back here."""
        before = [h.grad for h in self.hyperparams]
        for h in self.hyperparams:
            h.grad = None
        try:
            val.reshape(()).backward()
            hyper = [h.grad for h in self.hyperparams]
        finally:
            for h, g in zip(self.hyperparams, before):
                h.grad = g
            self._layout.reshard()
        return self._layout.local_gradients(), hyper

    def _accumulate_hypergradient(self, cand: "_Candidates", val: "_Validation", factor: float):
        """lambda.grad += factor * sum_k cot_k d loss_k / d lambda + the direct
        term (summed or averaged over ranks with parallel=). A hyperparameter
        nothing used (allow_unused) keeps its .grad, in one process."""
        own, parts, used = None, [], []
        try:
            cot = (ops.loss_cotangent(cand.losses, val.projections, self.temperature)
                   * factor).tolist()
            with torch.no_grad():
                for j, h in enumerate(self.hyperparams):
                    total, touched = torch.zeros_like(h), False
                    for k, dloss in enumerate(cand.dloss_dhyper):
                        if dloss is not None and dloss[j] is not None:
                            total.add_(dloss[j], alpha=cot[k])
                            touched = True
                    if val.hyper[j] is not None and self._par.adds_direct_term():
                        total.add_(val.hyper[j])
                        touched = True
                    parts.append(total)
                    used.append(touched)
        except Exception as e:  # noqa: BLE001  (re-raised on this rank by the exchange)
            own = e
            parts = [torch.zeros_like(h) for h in self.hyperparams]
        parts = self._par.hypergradient(parts, own)
        if self._par.collectives is None:
            parts = [total if touched else None for total, touched in zip(parts, used)]
        _accumulate(self.hyperparams, parts)

    def _check_replicas(self):
        # Shards differ by design: only the hyperparameters are replicas then.
        params = [] if self._layout.sharded else self.params
        local = torch.cat([parallel_.fingerprint(params),
                           parallel_.fingerprint(self.hyperparams)])
        table = self._par.collectives.all_gather(local)
        if not torch.equal(table, local.unsqueeze(0).expand_as(table)):
            raise RuntimeError("evograd: the replicas have drifted apart: parameter or "
                               "hyperparameter fingerprints differ across ranks "
                               f"(per rank: {table.tolist()}); every rank must start from the "
                               "same weights and apply the same updates")

    # ---- checkpoints -------------------------------------------------------

    def state_dict(self) -> dict:
        """What a resumed run needs to draw the same noise from here on: the
        base seed, the steps taken, the options (checked on load), and the
        inner learning rate where it is set by number (an optimiser's rate
        is in the optimiser's and its scheduler's own state)."""
        lr = self._inner_lr if isinstance(self._inner_lr, float) else None
        return {"format": 1, "seed": self.seed, "steps_taken": self.steps_taken,
                "inner_lr": lr, "options": self._options()}

    def load_state_dict(self, state: dict) -> None:
        """Continues from ``state`` (from ``state_dict``): the next step uses
        the seed the saved run's next step would have used. The options must
        match this instance's; a difference is a ValueError."""
        if not isinstance(state, dict) or state.get("format") != 1:
            raise ValueError("not an EvoGrad state_dict (expected a dict with format 1)")
        mine = self._options()
        # checkpoints from before the estimator option: the paper's estimator
        theirs = {"estimator": "evograd", "fd_step": None, **state.get("options", {})}
        # inner_lr follows a schedule: the saved value is taken, not compared
        # (checkpoints made before it could change list it among the options).
        diff = [f"{k}: saved {theirs.get(k)!r}, here {v!r}" for k, v in mine.items()
                if theirs.get(k) != v]
        if diff:
            raise ValueError("the saved EvoGrad had other options: " + "; ".join(diff))
        seed, steps = state.get("seed"), state.get("steps_taken")
        if not isinstance(seed, int) or not isinstance(steps, int) or steps < 0:
            raise ValueError("state_dict needs an int seed and a non-negative int steps_taken")
        lr = state.get("inner_lr", theirs.get("inner_lr"))
        if lr is not None and isinstance(self._inner_lr, float):
            self.inner_lr = lr
        self.seed, self.steps_taken = seed, steps

    def _options(self) -> dict:
        return {"population": self.population, "sigma": self.sigma,
                "temperature": self.temperature, "noise": self.noise,
                "antithetic": self.antithetic, "seed_schedule": self.seed_schedule,
                "scale": self.scale, "nonfinite": self.nonfinite,
                "estimator": self.estimator, "fd_step": self.fd_step,
                "common_random_numbers": self.common_random_numbers, "parallel": self.parallel,
                "parameter_elements": sum(p.numel() for p in self.params),
                "hyperparameter_elements": sum(h.numel() for h in self.hyperparams)}


# What every rank's EvoGrad must agree on (parallel=), in _agreed_fields' order.
_AGREED = ("population", "sigma", "temperature", "noise", "antithetic", "nonfinite",
           "seed_schedule", "hypergradient scale", "common_random_numbers", "parallel",
           "number of parameter tensors", "number of parameter elements",
           "number of hyperparameter tensors", "number of hyperparameter elements",
           "check_replicas")


# Set once by the constructor; assigning them afterwards raises (inner_lr may change).
_FIXED = frozenset(("population", "sigma", "temperature", "noise", "antithetic",
                    "common_random_numbers", "nonfinite", "seed_schedule", "scale", "parallel",
                    "check_replicas", "allow_unused", "params", "hyperparams", "buffers",
                    "hypergradient_scale", "estimator", "fd_step"))


def _accumulate(hyperparams, parts):
    """.grad += part, as backward() accumulates; None: the tensor is untouched."""
    with torch.no_grad():
        for h, total in zip(hyperparams, parts):
            if total is None:
                continue
            if h.grad is None:
                h.grad = total  # a tensor of the step's own (callers pass fresh ones)
            else:
                h.grad.add_(total)


def _learning_rate(name: str, value) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    value = ops._float(name, value)
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be finite and >= 0, got {value}")
    return value


def _optimizer_lr(optimizer) -> float:
    """The one learning rate of an optimiser's param groups (what a scheduler sets)."""
    lrs = {float(g["lr"]) for g in optimizer.param_groups}
    if len(lrs) != 1:
        raise ValueError(f"inner_lr: the optimiser's param groups have different learning rates "
                         f"{sorted(lrs)}; pass step(..., inner_lr=<the rate that applies>)")
    return _learning_rate("the optimiser's lr", lrs.pop())


def _is_ddp(module) -> bool:
    return isinstance(module, nn.parallel.DistributedDataParallel)


@dataclass
class _Candidates:
    reported: torch.Tensor   # [K] as the closure returned them
    losses: torch.Tensor     # [K] with dropped candidates far above the best
    dloss_dhyper: list       # per candidate: d loss_k / d lambda, or None if dropped
    dropped: int


@dataclass
class _Validation:
    loss: float                  # (mean over ranks with parallel="data")
    projections: torch.Tensor    # [K] c_k = <d val / d theta at theta*, eps_k>
    hyper: list                  # the direct term d val / d lambda (None where unused)
    aux: Any
    tensor: Optional[torch.Tensor]  # the loss, detached (the ranks' mean with parallel=)
