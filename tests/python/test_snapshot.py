"""What a step changes about the model is put back bit for bit (values,
.grad, buffers), also when a closure raises; the RNG is replayed per candidate."""

import pytest
import torch
from torch import nn

import evograd
from fixtures import BNNet, assert_same, snapshot


def test_model_restored_bit_exactly_including_buffers_and_grads():
    torch.manual_seed(0)
    model = BNNet()
    model.fc.weight.grad = torch.full_like(model.fc.weight, 3.0)
    model.out.bias.requires_grad_(False)
    x, y = torch.randn(8, 4), torch.randint(0, 2, (8,))
    snap = snapshot(model)
    model.train()
    meta = evograd.EvoGrad(model, [model.lam], population=3, sigma=0.01, seed=1)
    assert all(p is not model.lam for p in meta.params)
    train = lambda: nn.functional.cross_entropy(model(x), y) * (1 + model.lam.sum())
    val = lambda: nn.functional.cross_entropy(model(x), y)
    meta.step(train, val)
    assert model.lam.grad is not None
    model.lam.grad = None
    assert_same(model, snap)
    assert model.training  # mode is the closures' business


def test_model_restored_when_a_closure_raises():
    torch.manual_seed(0)
    model = BNNet()
    x = torch.randn(8, 4)
    snap = snapshot(model)
    meta = evograd.EvoGrad(model, [model.lam], population=2, seed=1)

    def boom():
        model(x)  # moves BN statistics, then fails
        raise RuntimeError("closure failed")

    good = lambda: model(x).sum() * model.lam.sum()
    with pytest.raises(RuntimeError, match="closure failed"):
        meta.step(boom, good)
    with pytest.raises(RuntimeError, match="closure failed"):
        meta.step(good, boom)
    assert_same(model, snap)
    assert model.lam.grad is None


def test_common_random_numbers_replay_rng_for_every_candidate():
    torch.manual_seed(0)
    model = BNNet()
    x = torch.randn(8, 4)
    for crn in (True, False):
        draws = []

        def train():
            draws.append(torch.rand(1).item())
            return model(x).sum() * model.lam.sum()

        evograd.EvoGrad(model, [model.lam], population=4, seed=3, common_random_numbers=crn).step(
            train, lambda: model(x).sum())
        assert (len(set(draws)) == 1) == crn


# ---- agreement with T1-T2 in the small-sigma limit --------------------------
