"""Numerical edge cases, half precision, aliasing, and thread safety."""
import math
import threading
import warnings

import pytest
import torch

import evograd
from evograd.baselines import reference_evograd_step, reference_noise
from reference import eps_list


def small_problem(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = (torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.5).to(dtype).requires_grad_()
    lam = torch.tensor([0.1, -0.2], dtype=dtype, requires_grad=True)
    x, y = torch.randn(10, 4, generator=g, dtype=torch.float64).to(dtype), torch.randn(10, 3, generator=g, dtype=torch.float64).to(dtype)
    train = lambda P: ((x @ P[0].T - y) ** 2).mean() + torch.exp(lam[0]) * (P[0] ** 2).sum() + lam[1] * P[0].sum()
    val = lambda P: ((x @ P[0].T - 0.5 * y) ** 2).mean()
    return W, lam, train, val


# ---- softmax extremes ----------------------------------------------------------

def test_weights_extreme_spread_and_ties():
    tau = 0.05
    w = evograd.weights(torch.tensor([0.0, 1e4 * tau, 2e4 * tau], dtype=torch.float64), tau)
    assert w.tolist() == [1.0, 0.0, 0.0]
    w = evograd.weights(torch.tensor([3.0] * 5, dtype=torch.float64), tau)
    assert w.tolist() == [0.2] * 5
    w = evograd.weights(torch.tensor([1e300, -1e300], dtype=torch.float64), 1e-300)
    assert w.tolist() == [0.0, 1.0]


def test_tiny_temperature_and_large_sigma_stay_finite():
    for sigma, tau in ((10.0, 0.05), (1e-3, 1e-12)):
        W, lam, train, val = small_problem()
        r = evograd.EvoGrad([W], [lam], population=4, sigma=sigma, temperature=tau, seed=1).step(
            lambda: train([W]), lambda: val([W]))
        assert torch.isfinite(lam.grad).all() and torch.isfinite(r.weights).all()
        assert r.weights.sum().item() == pytest.approx(1.0, abs=1e-12)


# ---- non-finite candidates ------------------------------------------------------

def test_nonfinite_candidate_is_an_error_by_default_and_droppable_on_request():
    W, lam, train, val = small_problem()
    calls = []

    def train_nan_second():
        calls.append(1)
        loss = train([W])
        return loss * float("nan") if len(calls) % 3 == 2 else loss

    before = W.detach().clone()
    with pytest.raises(ValueError, match="nonfinite='drop'"):
        evograd.EvoGrad([W], [lam], population=3, sigma=0.05, temperature=0.5, seed=9).step(
            train_nan_second, lambda: val([W]))
    assert torch.equal(W, before) and lam.grad is None

    calls.clear()
    r = evograd.EvoGrad([W], [lam], population=3, sigma=0.05, temperature=0.5, seed=9,
                        nonfinite="drop").step(train_nan_second, lambda: val([W]))
    assert r.dropped == 1 and r.weights[1].item() == 0.0 and math.isnan(r.losses[1].item())
    got = lam.grad.clone()
    lam.grad = None
    # Reference: the paper's step over the two surviving candidates' noise.
    noise = reference_noise([W], evograd.step_seed(9, 0), 3, 0.05)
    reference_evograd_step([W], [lam], train, val, 2, 0.05, 0.5, noise=[noise[0], noise[2]])
    assert torch.allclose(got, lam.grad, rtol=1e-12, atol=1e-15)

    with pytest.raises(ValueError, match="every candidate"):
        evograd.EvoGrad([W], [lam], population=2, nonfinite="drop").step(
            lambda: train([W]) * float("inf"), lambda: val([W]))
    with pytest.raises(ValueError, match="nonfinite"):
        evograd.EvoGrad([W], [lam], nonfinite="ignore")


# ---- sigma below the storage resolution ------------------------------------------

def test_sigma_underflow_is_an_error_or_a_warning():
    W = torch.full((4, 4), 1000.0, requires_grad=True)  # float32 ulp at 1000 is 6e-5
    lam = torch.tensor([0.5], requires_grad=True)
    meta = evograd.EvoGrad([W], [lam], sigma=1e-6, seed=0)
    with pytest.raises(ValueError, match="below the torch.float32 resolution"):
        meta.step(lambda: (W * lam).sum(), lambda: W.sum())
    assert torch.equal(W, torch.full((4, 4), 1000.0))
    with torch.no_grad():
        W[0] = 0.1  # 4 of 16 elements resolve sigma
    with pytest.warns(RuntimeWarning, match="vanishes in 12 of 16"):
        meta.step(lambda: (W * lam).sum(), lambda: W.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evograd.EvoGrad([W], [lam], sigma=1e-2, seed=0, buffers=[]).step(lambda: (W * lam).sum(),
                                                                       lambda: W.sum())


# ---- list shapes ---------------------------------------------------------------------

def test_zero_size_and_hundreds_of_tiny_tensors_match_one_flat_tensor():
    g = torch.Generator().manual_seed(4)
    sizes = [(i % 3) for i in range(300)]  # includes zero-size tensors
    flat = torch.randn(sum(sizes), generator=g, dtype=torch.float64)
    pieces = [t.clone().requires_grad_() for t in torch.split(flat, sizes)]
    whole = flat.clone().requires_grad_()
    lam = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    x = torch.randn(sum(sizes), generator=g, dtype=torch.float64)

    def grads(params, join):
        lam.grad = None
        evograd.EvoGrad(params, [lam], population=4, sigma=0.01, temperature=0.1, seed=5).step(
            lambda: ((join() - x) ** 2).sum() * torch.exp(lam).sum(), lambda: (join() ** 2).sum())
        return lam.grad.clone()

    a = grads(pieces, lambda: torch.cat(pieces))
    b = grads([whole], lambda: whole)
    assert torch.equal(a, b)


def test_aliasing_parameters_are_rejected():
    W = torch.randn(4, 4, requires_grad=True)
    lam = torch.tensor([0.5], requires_grad=True)
    with pytest.raises(ValueError, match="share memory"):
        evograd.EvoGrad([W, W], [lam])
    base = torch.zeros(10, requires_grad=True)
    with torch.no_grad():
        view_a, view_b = base[:6].detach().requires_grad_(), base[4:].detach().requires_grad_()
    with pytest.raises(ValueError, match="share memory"):
        evograd.EvoGrad([view_a, view_b], [lam])


# ---- half precision -------------------------------------------------------------------

@pytest.mark.parametrize("dtype,mbits", [(torch.float16, 10), (torch.bfloat16, 7)])
def test_half_precision_ops_against_float64(dtype, mbits):
    g = torch.Generator().manual_seed(6)
    shapes = [(5, 7), (0,), (33,)]
    params = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]
    sigma, seed, K = 0.01, 3, 3
    eps = [eps_list(shapes, seed, k, sigma, torch.float32, "gauss") for k in range(K)]
    half_ulp = 2.0 ** (-mbits - 1)  # relative bound of one rounding to storage
    for k in range(K):
        out = evograd.perturb(params, seed, k, sigma, "gauss")
        for o, p, e in zip(out, params, eps[k]):
            ref = p.double() + e.double()
            assert o.dtype == dtype
            assert ((o.double() - ref).abs() <= half_ulp * ref.abs() + 1e-30).all()
    losses = torch.tensor([0.2, 0.1, 0.4], dtype=torch.float64)
    w = torch.softmax(-losses / 0.3, 0)
    out = evograd.combine(params, losses, 0.3, seed, sigma, "gauss")
    for i, (o, p) in enumerate(zip(out, params)):
        ref = p.double() + sum(w[k] * eps[k][i].double() for k in range(K))
        assert ((o.double() - ref).abs() <= half_ulp * ref.abs() + 1e-15).all()
    c = evograd.project(params, seed, K, sigma, "gauss")
    assert c.dtype == torch.float32
    ref = torch.tensor([sum((p.double() * e.double()).sum() for p, e in zip(params, eps[k])) for k in range(K)])
    assert torch.allclose(c.double(), ref, rtol=2 ** -23, atol=1e-9)  # float32 result of a float64 sum


def test_bfloat16_model_step_restores_and_matches_float32_direction():
    W32, lam32, train32, val32 = small_problem(torch.float32, seed=2)
    evograd.EvoGrad([W32], [lam32], population=8, sigma=0.05, temperature=0.5, seed=3).step(
        lambda: train32([W32]), lambda: val32([W32]))
    Wb, lamb, trainb, valb = small_problem(torch.bfloat16, seed=2)
    before = Wb.detach().clone()
    evograd.EvoGrad([Wb], [lamb], population=8, sigma=0.05, temperature=0.5, seed=3).step(
        lambda: trainb([Wb]), lambda: valb([Wb]))
    assert torch.equal(Wb, before)
    a, b = lam32.grad.double(), lamb.grad.double()
    # bfloat16 keeps 8 bits: the losses (and so the weights) move by ~2^-8
    # relative, which bounds the change in the estimate's direction.
    assert torch.dot(a, b) / (a.norm() * b.norm()) > 0.95


def test_autocast_closures_work_with_step():
    W, lam, train, val = small_problem(torch.float32, seed=3)
    ref = evograd.EvoGrad([W], [lam], population=4, sigma=0.05, temperature=0.5, seed=8)
    ref.step(lambda: train([W]), lambda: val([W]))
    g32 = lam.grad.clone()
    lam.grad = None

    def under_autocast(fn):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fn([W]).float()
        return run

    evograd.EvoGrad([W], [lam], population=4, sigma=0.05, temperature=0.5, seed=8).step(
        under_autocast(train), under_autocast(val))
    assert W.dtype == torch.float32 and torch.isfinite(lam.grad).all()
    assert torch.dot(g32, lam.grad) / (g32.norm() * lam.grad.norm()) > 0.95


# ---- threads --------------------------------------------------------------------------

def test_two_threads_give_the_same_results_as_alone():
    def run(seed, out, steps=20):
        W, lam, train, val = small_problem(seed=seed)
        meta = evograd.EvoGrad([W], [lam], population=4, sigma=0.01, temperature=0.1, seed=seed)
        for _ in range(steps):
            meta.step(lambda: train([W]), lambda: val([W]))
        out[seed] = lam.grad.clone()

    alone = {}
    run(1, alone)
    run(2, alone)
    together = {}
    threads = [threading.Thread(target=run, args=(s, together)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert torch.equal(alone[1], together[1]) and torch.equal(alone[2], together[2])
