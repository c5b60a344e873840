"""One table of meta-step scenarios that Python and C++ must agree on.

make_fixtures.py runs each row through Python's ``evograd.EvoGrad`` and writes
the table (scenarios.txt) with the outcome of each row: the numbers of a
successful step, or the error type and a fragment both languages' messages
share. test_ops.cpp runs the same rows through ``evograd::EvoGrad`` on the
same scripted model and data, and must reproduce them bit for bit.

The columns are the rows of options.def (every option, in its order) and the
problem's setup; C++ reads the option columns by expanding the same rows,
so a new option becomes a column in both languages by itself, and
tests/python/test_options.py fails until some scenario varies it.
"""
import warnings
from dataclasses import dataclass
from typing import Any, Dict

import torch
from torch import nn

import evograd
from evograd import options


# The table's base point: the rows' defaults, with a larger sigma and
# temperature so that float64 candidates differ well above rounding (for
# the estimators that use them).
BASE = {"sigma": 0.01, "temperature": 0.1, "seed": 7}


@dataclass
class Scenario:
    """One step: every option of options.def (``options``, the rows'
    defaults and BASE unless the row says otherwise), how the problem is set
    up, and the outcome both languages must give."""
    name: str
    options: Dict[str, Any]
    dtype: str = "float64"       # model dtype
    poison: bool = False         # candidates that raise l1.weight[0, 0] get a NaN loss
    unused: bool = False         # a second hyperparameter the training loss ignores
    dropout: bool = False        # random layer in both closures
    resume: bool = False         # a step, a checkpoint loaded into a fresh EvoGrad, then the step compared
    expect: str = "ok"           # "ok", or "<ErrorType>:<message fragment>"


def scenario(name: str, dtype="float64", poison=False, unused=False, dropout=False, resume=False,
             expect="ok", **chosen) -> Scenario:
    unknown = set(chosen) - set(options.BY_NAME)
    if unknown:
        raise ValueError(f"scenario {name}: {sorted(unknown)} are not rows of options.def")
    estimator = chosen.get("estimator", options.BY_NAME["estimator"].default)
    base = {k: v for k, v in BASE.items() if k in options.USES[estimator]}
    values = {**{o.name: o.default for o in options.OPTIONS}, **base, **chosen}
    return Scenario(name, values, dtype, poison, unused, dropout, resume, expect)


TABLE = [
    scenario("float32_sign", dtype="float32"),
    scenario("float64_gauss_antithetic", noise="gauss", population=4, antithetic=True),
    scenario("bfloat16_sign", dtype="bfloat16", sigma=0.05, population=3),
    scenario("nonfinite_dropped", population=4, nonfinite="drop", poison=True, seed=3),
    scenario("nonfinite_raises", population=4, poison=True, seed=3,
             expect="ValueError:training loss is not finite"),
    scenario("unused_hyperparameter", unused=True,
             expect="ValueError:does not depend on hyperparameter 2"),
    scenario("dropout_common_random_numbers", population=3, dropout=True,
             common_random_numbers=True),
    scenario("unused_hyperparameter_allowed", unused=True, allow_unused=True),
    scenario("collapsed_weights", temperature=1e-5, sigma=0.05),
    scenario("t1t2_scale", scale="t1t2", inner_lr=0.1, antithetic=True, population=4),
    scenario("consecutive_seeds", seed_schedule="consecutive", resume=True),
    scenario("checkpoint_resumed", resume=True, noise="gauss"),
    scenario("replicas_checked_alone", check_replicas=True),
    scenario("parallel_needs_a_group", parallel="data",
             expect="ValueError:needs a process group"),
    scenario("lookahead_float64", estimator="lookahead", inner_lr=0.1),
    scenario("lookahead_float32_dropout", dtype="float32", estimator="lookahead", inner_lr=0.05,
             dropout=True),
    scenario("lookahead_fd_step", estimator="lookahead", inner_lr=0.1, fd_step=1e-4),
    scenario("lookahead_inner_lr_zero", estimator="lookahead", inner_lr=0.0),
    scenario("lookahead_inner_lr_zero_unused_allowed", estimator="lookahead", inner_lr=0.0,
             unused=True, allow_unused=True),
    scenario("lookahead_resumed", estimator="lookahead", inner_lr=0.1, resume=True),
    scenario("lookahead_unused_allowed", estimator="lookahead", inner_lr=0.1, unused=True,
             allow_unused=True),
    scenario("lookahead_unused_raises", estimator="lookahead", inner_lr=0.1, unused=True,
             expect="ValueError:does not depend on hyperparameter 2"),
    scenario("lookahead_refuses_population", estimator="lookahead", inner_lr=0.1, population=4,
             expect="ValueError:estimator 'lookahead' does not use population"),
    scenario("lookahead_keeps_train_grad", estimator="lookahead", inner_lr=0.1,
             keep_train_grad=True, dropout=True),
    scenario("evograd_refuses_keep_train_grad", keep_train_grad=True,
             expect="ValueError:estimator 'evograd' does not use keep_train_grad"),
    scenario("lookahead_refuses_candidates", estimator="lookahead", inner_lr=0.1,
             parallel="candidates",
             expect="ValueError:has no candidates to share out among ranks"),
    scenario("lookahead_needs_inner_lr", estimator="lookahead",
             expect="ValueError:needs inner_lr"),
    scenario("inner_lr_unused", inner_lr=0.1, expect="ValueError:inner_lr is used only with"),
]

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
RNG_SEED = 1234  # torch.manual_seed before each step: dropout masks agree across languages
RESUMED_SEED_SHIFT = 1000  # the fresh learner's own seed, which the checkpoint replaces


class ScenarioNet(nn.Module):
    """Linear, BatchNorm (buffers to restore), optional dropout, Linear; a
    per-sample weighted training loss with a learned weight decay."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.3)
        self.l2 = nn.Linear(8, 3)
        self.log_decay = nn.Parameter(torch.tensor([-2.0]))
        self.register_buffer("w00", self.l1.weight[0, 0].detach().clone())

    def forward(self, x: torch.Tensor, dropout: bool) -> torch.Tensor:
        h = torch.tanh(self.bn(self.l1(x)))
        if dropout:
            h = self.drop(h)
        return self.l2(h)

    @torch.jit.export
    def train_loss(self, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor,
                   poison: bool, dropout: bool) -> torch.Tensor:
        per_sample = ((self.forward(x, dropout) - y) ** 2).sum(1)
        decay = torch.exp(self.log_decay) * (self.l1.weight ** 2).sum()
        loss = (torch.sigmoid(logits) * per_sample).mean() + decay.sum()
        if poison and bool(self.l1.weight[0, 0] > self.w00):
            loss = loss * float("nan")
        return loss

    @torch.jit.export
    def val_loss(self, x: torch.Tensor, y: torch.Tensor, dropout: bool) -> torch.Tensor:
        return ((self.forward(x, dropout) - y) ** 2).sum(1).mean()


def data() -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(16, 4, generator=g, dtype=torch.float64),
            "y": torch.randn(16, 3, generator=g, dtype=torch.float64),
            "xv": torch.randn(10, 4, generator=g, dtype=torch.float64),
            "yv": torch.randn(10, 3, generator=g, dtype=torch.float64),
            "logits": torch.rand(16, generator=g, dtype=torch.float64) * 2 - 1}


def run(s: Scenario, model_path: str, d: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """One step of scenario s in Python: its numbers, or raises as C++ must."""
    dtype = DTYPES[s.dtype]
    model = torch.jit.load(model_path)
    model.to(dtype)
    model.train()
    x, y, xv, yv = (d[k].to(dtype) for k in ("x", "y", "xv", "yv"))
    logits = d["logits"].to(dtype).clone().requires_grad_()
    hyper = [logits] + ([torch.zeros(2, dtype=dtype, requires_grad=True)] if s.unused else [])
    decay = [p for n, p in model.named_parameters() if n == "log_decay"][0]
    params = [p for n, p in model.named_parameters() if n != "log_decay"]
    buffers = [b for n, b in model.named_buffers() if n != "w00"]
    before = [b.clone() for b in buffers]

    def build(seed):
        return evograd.EvoGrad(params, [decay] + hyper, buffers=buffers,
                               **dict(s.options, seed=seed))

    def step(meta):
        torch.manual_seed(RNG_SEED)
        return meta.step(lambda: model.train_loss(x, y, logits, s.poison, s.dropout),
                         lambda: model.val_loss(xv, yv, s.dropout))
    meta = build(s.options["seed"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if s.resume:  # the second step, from a checkpoint in a learner built with another seed
            step(meta)
            state = meta.state_dict()
            meta = build(s.options["seed"] + RESUMED_SEED_SHIFT)
            meta.load_state_dict(state)
            for h in [decay] + hyper:
                h.grad = None
            caught.clear()
        r = step(meta)
    # restored, except with keep_train_grad: as the training forward at theta
    # left them (the loop skips its own forward, which would have)
    if not s.options.get("keep_train_grad"):
        assert all(torch.equal(b, c) for b, c in zip(buffers, before)), "buffers restored"
    assert r.collapsed == any("collapsed" in str(w.message) for w in caught), "warned iff collapsed"
    out = {"losses": r.losses, "weights": r.weights, "grad_decay": decay.grad,
           "grad_logits": logits.grad, "val": torch.tensor([r.val_loss], dtype=torch.float64),
           "val_tensor": r.val_loss_tensor, "dropped": torch.tensor([r.dropped]),
           "ess": torch.tensor([r.ess], dtype=torch.float64),
           "collapsed": torch.tensor([int(r.collapsed)]), "seed": torch.tensor([r.seed]),
           # the parameters' .grad after the step: none, unless keep_train_grad
           "grad_params": torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]
                                    or [torch.zeros(0, dtype=dtype)]),
           "buffers": torch.cat([b.reshape(-1).double() for b in buffers])}
    if s.unused:  # allowed: the unused hyperparameter keeps its (absent) .grad
        out["unused_has_grad"] = torch.tensor([int(hyper[1].grad is not None)])
    return out


def spelled(value) -> str:
    """A value as test_ops.cpp reads it: none for unset, 0/1, repr of a float."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


SETUP = ("dtype", "poison", "unused", "dropout", "resume")
# The rows both languages have: the table's columns (a PYTHON row has no C++ field)
BOTH = [o for o in options.OPTIONS if not o.python_only]


def table_line(s: Scenario) -> str:
    """name, then key=value for every row of options.def both languages have
    (in its order) and the setup, then expect=... to the end of the line."""
    fields = [f"{o.name}={spelled(s.options[o.name])}" for o in BOTH]
    fields += [f"{k}={spelled(getattr(s, k))}" for k in SETUP]
    return " ".join([s.name] + fields + [f"expect={s.expect}"])


def unvaried(table) -> list:
    """The rows of options.def that no scenario sets to more than one value."""
    return [o.name for o in BOTH
            if len({spelled(sc.options[o.name]) for sc in table}) < 2]
