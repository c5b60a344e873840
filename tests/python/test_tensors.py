"""Which tensors a step perturbs, restores and refuses (evograd/tensors.py)."""

import pytest
import torch
from torch import nn

import evograd
from fixtures import mlp_fixture


def test_overlapping_sets_and_non_leaf_hyperparameters():
    P, H, _, _ = mlp_fixture(torch.float64)
    with pytest.raises(ValueError, match=r"params\[0\] and hyperparams\[0\] share memory"):
        evograd.EvoGrad(P, [P[0]])
    with pytest.raises(ValueError, match="leaf"):
        evograd.EvoGrad(P, [H[0] * 2])
    with pytest.raises(TypeError, match="tensor"):
        evograd.EvoGrad(P, ["lambda"])


def test_list_without_buffers_warns_and_module_restores_its_buffers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 1)).double()
    lam = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    x = torch.randn(8, 3, dtype=torch.float64)
    head = list(model[2].parameters())
    with pytest.warns(UserWarning, match="module="):
        evograd.EvoGrad(head, lam, seed=0)
    stats = model[1].running_mean.clone()
    meta = evograd.EvoGrad(head, lam, seed=0, module=model)
    assert {id(b) for b in meta.buffers} == {id(b) for b in model.buffers()}
    meta.step(lambda: (model(x) ** 2).mean() * torch.exp(lam).sum(), lambda: model(x).mean())
    assert torch.equal(model[1].running_mean, stats)
    with pytest.raises(ValueError, match="not both"):
        evograd.EvoGrad(head, lam, module=model, buffers=[])
    with pytest.raises(ValueError, match="already restores"):
        evograd.EvoGrad(model, lam, module=model)


def test_buffers_overlapping_perturbed_tensors_are_folded():
    W = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    lam = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    stat = torch.zeros(2, dtype=torch.float64)
    meta = evograd.EvoGrad([W], lam, buffers=[W, W.detach()[1], stat, stat, lam], seed=0)
    assert len(meta.buffers) == 1 and meta.buffers[0] is stat


def test_module_without_tensors_to_perturb_says_what_counts():
    frozen = nn.Linear(2, 2).requires_grad_(False)
    lam = torch.zeros(1, requires_grad=True)
    with pytest.raises(ValueError, match="buffers with requires_grad=True"):
        evograd.EvoGrad(frozen, lam)
