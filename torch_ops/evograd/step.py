"""``EvoGrad``: one memory-lean meta-step over a model's own parameters.

The class checks and holds the options (declared in ``options.def``), the
tensors and the ranks' agreement, and each step dispatches once to its
estimator's unit (estimators.py: the paper's in paper.py and phases.py,
"lookahead" and "jvp" on unrolled.py's shared passes). Every unit writes
into the parameters' own storage, records one small graph at a time, and
puts the model back bit for bit (values, ``.grad``, buffers, training
flags), also when a closure raises. The snapshot and the checkpoint live in
modules of their own.
"""
import contextlib
from typing import Callable, Iterable, Optional, Union

import torch
from torch import nn

from . import estimators, jvp, layout, learning_rate, ops, options, phases, precision, state, tensors
from . import parallel as parallel_
from . import shards
from .result import StepResult
from .seeds import default_base_seed, step_seed
from .tensors import TensorsLike

# How a step estimates the hypergradient (docs/design.md derives each): the
# paper's "evograd"; T1-T2's by a finite difference, "lookahead", or
# exactly by forward mode, "jvp".
ESTIMATORS = options.BY_NAME["estimator"].choices


COLLAPSE_ESS = phases.COLLAPSE_ESS

# Agreed across ranks besides the AGREED options: what the tensors and scale come to.
_AGREED_FACTS = ("hypergradient scale", "number of parameter tensors",
                 "number of parameter elements", "number of hyperparameter tensors",
                 "number of hyperparameter elements")

# Set once by the constructor (the seed also by load_state_dict); assigning
# them afterwards raises. inner_lr may change between steps.
_FIXED = frozenset({o.name for o in options.OPTIONS} - {"inner_lr"}) | frozenset(
    ("params", "hyperparams", "buffers", "hypergradient_scale"))


class EvoGrad:
    """EvoGrad hypergradients for ``hyperparams`` from perturbations of ``params``.

    Args (each option is a row of ``options.def``, shared with C++):
        params: a module (each floating tensor of it that requires grad,
            parameter or MetaModule buffer, is perturbed once, hyperparameters
            excepted; its other buffers are restored after each step) or a
            list of tensors (then pass ``module=``, the model whose buffers
            are restored, or ``buffers=``; neither warns, as the K + 1
            forwards of a step would change BatchNorm statistics for good).
        hyperparams: lambda: a module, a tensor or a list of leaf tensors that
            require grad (a module's floating buffers that require grad too).
        population, sigma, temperature: K >= 2 candidates ``theta + sigma *
            z_k``, weighted by ``softmax(-loss / temperature)``.
        noise: ``"sign"`` (Rademacher, as in the paper) or ``"gauss"``;
            ``antithetic``: candidate 2j+1 uses ``-z`` of candidate 2j.
        seed: base noise seed; step t uses ``step_seed(seed, t,
            seed_schedule)``. ``None``: derived from ``torch.initial_seed()``
            without drawing from torch's generator. ``seed_schedule``:
            ``"mixed"`` or ``"consecutive"`` (``seed + t``, evograd's first rule).
        common_random_numbers: replay one torch RNG state for every candidate
            (shared dropout masks: loss differences come from the noise alone).
        scale: ``None`` or ``"t1t2"``: the part through the candidates is
            multiplied by ``tau * inner_lr / (sigma**2 * c)``, ``c = 1 - 1/K``
            (1 with antithetic noise), so that for small sigma its expectation
            is the one-step unrolled (T1-T2) hypergradient: a meta-optimiser
            tuned for T1-T2 keeps its settings.
        inner_lr: the model's learning rate alpha (``scale="t1t2"``,
            ``estimator="lookahead"`` or ``"jvp"``): a number >= 0, or the model's
            optimiser, read at every step so that any LR scheduler is
            followed. May be assigned between steps or passed per step
            (``step(..., inner_lr=lr)``); saved by ``state_dict``.
        estimator: ``"evograd"`` (the paper's, the default); ``"jvp"``:
            T1-T2's hypergradient exactly, by forward mode along the
            validation gradient at the inner step's weights (what closures
            detach stays detached, as in T1-T2; needs the model, as params
            or module=); or ``"lookahead"``: the same by a central finite
            difference of length ``fd_step`` (closures that detach a value
            at theta should use ``evograd.detached``; ``fd_step=None``:
            ``sqrt(eps) * max(1, |theta|)`` for the parameters' dtype).
            options.def lists the options each one uses; setting another
            raises. Both T1-T2 estimators run in one process or with
            ``parallel="data"``; "jvp" also on an FSDP2-sharded model.
        allow_unused: as in ``torch.autograd.grad``: a hyperparameter no loss
            depends on keeps its ``.grad`` instead of raising.
        nonfinite: a candidate with a NaN/inf training loss ``"raise"``s
            (the model restored) or is ``"drop"``ped (weight exactly 0).
        parallel: ``None``, ``"data"`` (each rank's closures see its shard;
            the objective is the mean over ranks; FSDP2-sharded models take
            this with the paper's estimator and "jvp") or ``"candidates"`` (rank r
            evaluates k = r, r + world, ...; the paper's estimator only).
            Every rank builds alike (checked) and steps together. The paper's
            estimator sends O(K + N) float64 values whatever the model's size;
            "jvp" and "lookahead" reduce the inner and the validation
            gradient, two all-reduces of the parameters' size that a DDP
            training step makes too (each exchange is listed in docs/api.md,
            "Many processes").
            See ``evograd.parallel``. ``process_group``: default the world.
        check_replicas: with ``parallel``, each step first compares the
            exact bits of the parameters and lambda across ranks (one gather
            of 4 int64) and raises if replicas have drifted apart.
        keep_train_grad: "jvp" and "lookahead": the inner pass's gradient
            of the training loss at the current weights and lambda (the ranks'
            mean with ``parallel="data"``) is accumulated into the
            parameters' ``.grad``, as ``backward()`` would, so that the
            model's optimiser steps on it and the loop skips its own forward
            and backward: one training pass per iteration instead of two,
            with the model's update seeing lambda from before this step's
            update (a one-step delay). The buffers (BatchNorm's running
            statistics) are left as that training forward left them, as
            the skipped forward would have. Off (default): the model is
            left exactly as it was found.
        autocast: ``None`` (default) or ``True``: the closures run as
            written, ``torch.autocast`` included, and the hypergradient is
            T1-T2's under that autocast; with ``None`` "jvp" warns once when
            they compute in half precision, since that can differ from
            float32's (``True`` says it is meant). ``False``: every torch
            function the step's passes call runs with autocast disabled, in
            the tensors' own dtypes, whatever the closures enter: float32's
            hypergradient at float32's cost. "lookahead" refuses half
            precision; the paper's estimator warns when its loss differences
            are within its rounding.
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
                 estimator: str = "evograd", fd_step: Optional[float] = None,
                 keep_train_grad: bool = False, autocast: Optional[bool] = None):
        args = locals()  # every row of options.def is a keyword here (tests/python/test_options.py)
        given = {name: args[name] for name in options.BY_NAME}
        self.estimator = options.check("estimator", estimator)
        options.check_uses(estimator, given)
        if estimator != "evograd" and parallel == "candidates":
            raise ValueError(f"estimator '{estimator}' has no candidates to share out among "
                             "ranks: use parallel='data'")
        self.fd_step = options.check("fd_step", fd_step)
        self._exchange = parallel_.make(options.check("parallel", parallel), process_group)
        self.parallel = parallel
        own = None
        try:
            self._build(params, hyperparams, buffers, module, given)
        except (ValueError, TypeError) as e:
            if self._exchange.collectives is None:
                raise
            own = e
        if self._exchange.collectives is not None:
            names = [o.name for o in options.OPTIONS if o.agreed] + list(_AGREED_FACTS)
            parallel_.agree(self._exchange.collectives,
                            self._agreed_fields() if own is None else dict.fromkeys(names, 0.0), own)
            # Every rank draws the same noise: rank 0's base seed.
            self.seed = int(self._exchange.collectives.broadcast(
                torch.tensor([self.seed], dtype=torch.int64))[0])
            self._exchange = self._layout.exchange(self._exchange)
        # DDP reduces gradients in backward hooks and, outside no_sync(),
        # readies its reducer in every forward: the step's own forwards run
        # under no_sync() so that the P-sized all-reduce never happens here.
        owner = params if isinstance(params, nn.Module) else module
        self._ddp = owner if isinstance(owner, nn.parallel.DistributedDataParallel) else None
        self._setting = estimators.Setting(self._layout, self._exchange, self.buffers,
                                           self._bystanders, owner, self._no_ddp_sync)
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
        return learning_rate.of_optimizer(source)

    @inner_lr.setter
    def inner_lr(self, value):
        object.__setattr__(self, "_inner_lr", learning_rate.source(
            value, f"estimator='{self.estimator}'" if self.estimator != "evograd" else
            "scale='t1t2'" if self.scale == "t1t2" else None))

    @property
    def hypergradient_scale(self) -> float:
        """What the part through the candidates is multiplied by at the next
        step: 1, or ``tau * inner_lr / (sigma**2 * c)`` with scale='t1t2'."""
        if self.scale is None or self.estimator != "evograd":
            return 1.0
        c = 1.0 if self.antithetic else 1.0 - 1.0 / self.population
        return self.temperature * self.inner_lr / (self.sigma ** 2 * c)

    @property
    def noise_args(self):
        return self.sigma, self.noise, self.antithetic

    def _agreed_fields(self):
        facts = (self.hypergradient_scale, len(self.params), sum(p.numel() for p in self.params),
                 len(self.hyperparams), sum(h.numel() for h in self.hyperparams))
        mine = {o.name: getattr(self, o.name) for o in options.OPTIONS if o.agreed}
        return {**options.agreed(mine), **{n: float(v) for n, v in zip(_AGREED_FACTS, facts)}}

    def _build(self, params, hyperparams, buffers, module, given):
        self.hyperparams = tensors.hyper_tensors(hyperparams)
        self.params, default_buffers = tensors.perturbed(params, self.hyperparams, buffers, module)
        if self.parallel == "candidates" and any(shards.is_sharded(p) for p in self.params):
            raise ValueError("evograd: an FSDP-sharded model runs every forward on all ranks "
                             "together, so ranks cannot evaluate different candidates; use "
                             "parallel='data'")
        if self.estimator == "lookahead" and any(shards.is_sharded(p) for p in self.params):
            raise ValueError("evograd: estimator 'lookahead' does not run on an FSDP-sharded "
                             "model; use estimator='jvp' (T1-T2's hypergradient, exactly) or "
                             "'evograd', which run on FSDP shards")
        if any(shards.is_sharded(h) for h in self.hyperparams):
            raise ValueError("evograd: a hyperparameter is FSDP-sharded; keep lambda out of "
                             "fully_shard (its ignored_params=, or a module of its own) so that "
                             "every rank holds it whole")
        owner = params if isinstance(params, nn.Module) else module
        self._layout = layout.for_parameters(
            self.params, self._exchange.world if self.parallel == "data" else None, owner)
        chosen = default_buffers if buffers is None else tensors.as_tensors("buffers", buffers)
        self.buffers = tensors.restored_buffers(chosen, self._layout.views, self.hyperparams)
        for o in options.OPTIONS:
            if o.name not in ("estimator", "fd_step", "parallel", "seed", "inner_lr"):
                setattr(self, o.name, options.check(o.name, given[o.name]))
        if self.antithetic and self.population % 2:
            raise ValueError(f"antithetic noise needs an even population, got {self.population}")
        tensors.check_tensors(self.params, self.hyperparams)
        # dtypes, one device, and no memory shared among the parameters or
        # with the hyperparameters: the operator layer's one check.
        ops.check_perturbable(self._layout.views, self.hyperparams)
        self.inner_lr = given["inner_lr"]
        if self.estimator == "jvp":
            jvp.check_model(owner)
        self._bystanders = self._layout.bystanders(owner, self.hyperparams)
        seed = options.check("seed", given["seed"])
        self.seed = default_base_seed() if seed is None else seed
        self.steps_taken = 0

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
        seed = step_seed(self.seed, self.steps_taken, self.seed_schedule)
        if self.check_replicas and self._exchange.collectives is not None:
            phases.check_replicas(self, self._layout, self._exchange)
        with precision.WithoutAutocast() if self.autocast is False else contextlib.nullcontext():
            result = estimators.unit(self.estimator)(self, self._setting, train_loss_fn,
                                                     val_loss_fn, seed)
        self.steps_taken += 1
        return result

    def _no_ddp_sync(self):
        return self._ddp.no_sync() if self._ddp is not None else contextlib.nullcontext()

    @property
    def exchange(self) -> "parallel_.Local":
        """How this EvoGrad talks to the other ranks (``.collectives`` counts
        the bytes and calls it made; None in one process)."""
        return self._exchange

    def _recorded(self) -> dict:
        return state.recorded({o.name: getattr(self, o.name) for o in options.OPTIONS},
                              self.params, self.hyperparams)

    def state_dict(self) -> dict:
        """The base seed, steps taken, options and a numeric inner_lr (``evograd.state``)."""
        lr = self._inner_lr if isinstance(self._inner_lr, float) else None
        return state.state_dict(self.seed, self.steps_taken, lr, self._recorded())

    def load_state_dict(self, state_: dict) -> None:
        """Continues from ``state_``: the next step draws the saved run's next noise."""
        resumed = state.load(state_, self._recorded(), isinstance(self._inner_lr, float))
        if resumed.inner_lr is not None:
            self.inner_lr = resumed.inner_lr
        object.__setattr__(self, "seed", resumed.seed)  # fixed to callers, not to a resume
        self.steps_taken = resumed.steps_taken
