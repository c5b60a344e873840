"""TorchScript: the writing ops are never dropped from scripted code, traced
code that would bake a seed in says so, and a module with tied weights
perturbs each tensor once."""
import warnings
from typing import List

import pytest
import torch
from torch import nn

import evograd
from reference import eps_list

SHAPES = [(3,), (2, 2)]


@torch.jit.script
def perturb_in_place(a: torch.Tensor, b: torch.Tensor, seed: int, k: int):
    out = [a, b]  # built inside the script, unused afterwards
    torch.ops.evograd.perturb_into([a.clone(), b.clone()], out, seed, k, 0.5, "sign", False)


@torch.jit.script
def combine_in_place(a: torch.Tensor, b: torch.Tensor, losses: torch.Tensor):
    base = [a.clone(), b.clone()]
    torch.ops.evograd.combine_into(base, losses, [a, b], 0.3, 11, 0.25, "gauss", False)


def test_scripted_into_ops_write_through_a_list_built_in_the_script():
    a, b = torch.zeros(3, dtype=torch.float64), torch.zeros(2, 2, dtype=torch.float64)
    for call in range(3):  # the profiling executor optimises after the first runs
        perturb_in_place(a, b, 5, call)
    want = [sum(e) for e in zip(*[eps_list(SHAPES, 5, k, 0.5, torch.float64) for k in range(3)])]
    assert torch.equal(a, want[0]) and torch.equal(b, want[1])

    losses = torch.tensor([0.2, 0.6], dtype=torch.float64)
    for _ in range(3):
        before = [a.clone(), b.clone()]
        combine_in_place(a, b, losses)
        expected = evograd.combine(before, losses, 0.3, 11, 0.25, "gauss")
        assert torch.equal(a, expected[0]) and torch.equal(b, expected[1])


def test_into_ops_keep_their_write_annotation():
    for name in ("perturb_into", "combine_into"):
        schema = getattr(torch.ops.evograd, name).default._schema
        out = [a for a in schema.arguments if a.name == "out"][0]
        assert out.alias_info is not None and out.alias_info.is_write, name


def test_tracing_a_seeded_call_warns_that_the_seed_is_baked_in():
    x = torch.randn(4)

    def f(t):
        return evograd.perturb([t], 3, 1, 0.1)[0]

    with pytest.warns(torch.jit.TracerWarning, match="constants"):
        traced = torch.jit.trace(f, (x,), check_trace=False)
    assert torch.equal(traced(x), f(x))


def test_tracing_a_meta_step_is_an_error():
    model, lam = nn.Linear(2, 1), torch.zeros(1, requires_grad=True)
    meta = evograd.EvoGrad(model, lam, seed=0)
    x = torch.randn(3, 2)

    def f(inp):
        meta.step(lambda: (model(inp) * lam).sum(), lambda: model(inp).sum())
        return inp

    before = [p.detach().clone() for p in model.parameters()]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="cannot be traced"):
            torch.jit.trace(f, (x,))
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(4, 4)
        self.dec = nn.Linear(4, 4)
        self.dec.weight = self.enc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.tanh(self.enc(x)))


@pytest.mark.parametrize("scripted", [False, True])
def test_tied_weights_are_perturbed_once_and_restored(scripted):
    torch.manual_seed(0)
    model = Tied().double()
    if scripted:
        model = torch.jit.script(model)
    logits = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    x = torch.randn(6, 4, dtype=torch.float64)
    meta = evograd.EvoGrad(model, logits, population=2, sigma=1e-2, seed=1)
    assert len(meta.params) == 3
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    meta.step(lambda: (torch.sigmoid(logits) * ((model(x) - x) ** 2).sum(1)).mean(),
              lambda: ((model(x) - x) ** 2).mean())
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
