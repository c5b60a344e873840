"""One table of meta-step scenarios that Python and C++ must agree on.

make_fixtures.py runs each row through Python's ``evograd.EvoGrad`` and writes
the table (scenarios.txt) with the outcome of each row: the numbers of a
successful step, or the error type and a fragment both languages' messages
share. test_ops.cpp runs the same rows through ``evograd::EvoGrad`` on the
same scripted model and data, and must reproduce them bit for bit.
"""
import warnings
from dataclasses import dataclass
from typing import Dict

import torch
from torch import nn

import evograd


@dataclass
class Scenario:
    name: str
    dtype: str = "float64"       # model dtype
    noise: str = "sign"
    population: int = 2
    antithetic: bool = False
    sigma: float = 0.01
    temperature: float = 0.1
    seed: int = 7
    nonfinite: str = "raise"
    poison: bool = False         # candidates that raise l1.weight[0, 0] get a NaN loss
    unused: bool = False         # a second hyperparameter the training loss ignores
    dropout: bool = False        # random layer, with common random numbers
    estimator: str = "evograd"
    scale: str = "none"          # "none" or "t1t2"
    inner_lr: float = -1.0       # -1: not given
    fd_step: float = 0.0         # 0: not given (the default step)
    allow_unused: bool = False
    expect: str = "ok"           # "ok", or "<ErrorType>:<message fragment>"


TABLE = [
    Scenario("float32_sign", dtype="float32"),
    Scenario("float64_gauss_antithetic", noise="gauss", population=4, antithetic=True),
    Scenario("bfloat16_sign", dtype="bfloat16", sigma=0.05, population=3),
    Scenario("nonfinite_dropped", population=4, nonfinite="drop", poison=True, seed=3),
    Scenario("nonfinite_raises", population=4, poison=True, seed=3,
             expect="ValueError:training loss is not finite"),
    Scenario("unused_hyperparameter", unused=True,
             expect="ValueError:does not depend on hyperparameter 2"),
    Scenario("dropout_common_random_numbers", population=3, dropout=True),
    Scenario("unused_hyperparameter_allowed", unused=True, allow_unused=True),
    Scenario("collapsed_weights", temperature=1e-5, sigma=0.05),
    Scenario("t1t2_scale", scale="t1t2", inner_lr=0.1, antithetic=True, population=4),
    Scenario("lookahead_float64", estimator="lookahead", inner_lr=0.1),
    Scenario("lookahead_float32_dropout", dtype="float32", estimator="lookahead", inner_lr=0.05,
             dropout=True),
    Scenario("lookahead_fd_step", estimator="lookahead", inner_lr=0.1, fd_step=1e-4),
    Scenario("lookahead_inner_lr_zero", estimator="lookahead", inner_lr=0.0),
    Scenario("lookahead_unused_allowed", estimator="lookahead", inner_lr=0.1, unused=True,
             allow_unused=True),
    Scenario("lookahead_unused_raises", estimator="lookahead", inner_lr=0.1, unused=True,
             expect="ValueError:does not depend on hyperparameter 2"),
    Scenario("lookahead_needs_inner_lr", estimator="lookahead",
             expect="ValueError:needs inner_lr"),
    Scenario("inner_lr_unused", inner_lr=0.1, expect="ValueError:inner_lr is used only with"),
]

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
RNG_SEED = 1234  # torch.manual_seed before each step: dropout masks agree across languages


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
    meta = evograd.EvoGrad(params, [decay] + hyper, population=s.population, sigma=s.sigma,
                           temperature=s.temperature, noise=s.noise, antithetic=s.antithetic,
                           seed=s.seed, nonfinite=s.nonfinite, buffers=buffers,
                           common_random_numbers=s.dropout, estimator=s.estimator,
                           scale=None if s.scale == "none" else s.scale,
                           inner_lr=None if s.inner_lr < 0 else s.inner_lr,
                           fd_step=s.fd_step or None, allow_unused=s.allow_unused)
    torch.manual_seed(RNG_SEED)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = meta.step(lambda: model.train_loss(x, y, logits, s.poison, s.dropout),
                      lambda: model.val_loss(xv, yv, s.dropout))
    assert all(torch.equal(b, c) for b, c in zip(buffers, before)), "buffers restored"
    assert r.collapsed == any("collapsed" in str(w.message) for w in caught), "warned iff collapsed"
    out = {"losses": r.losses, "weights": r.weights, "grad_decay": decay.grad,
           "grad_logits": logits.grad, "val": torch.tensor([r.val_loss], dtype=torch.float64),
           "val_tensor": r.val_loss_tensor, "dropped": torch.tensor([r.dropped]),
           "ess": torch.tensor([r.ess], dtype=torch.float64),
           "collapsed": torch.tensor([int(r.collapsed)])}
    if s.unused:  # allowed: the unused hyperparameter keeps its (absent) .grad
        out["unused_has_grad"] = torch.tensor([int(hyper[1].grad is not None)])
    return out


def table_line(s: Scenario) -> str:
    fields = [s.name, s.dtype, s.noise, s.population, int(s.antithetic), s.sigma, s.temperature,
              s.seed, s.nonfinite, int(s.poison), int(s.unused), int(s.dropout), s.estimator,
              s.scale, s.inner_lr, s.fd_step, int(s.allow_unused), s.expect]
    return " ".join(repr(f) if isinstance(f, float) else str(f) for f in fields)
