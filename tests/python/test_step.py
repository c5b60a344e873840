"""EvoGrad.step against the combine route, the paper's plain step and T1-T2;
restoration, reproducibility and bad input."""
import math

import pytest
import torch

import evograd
from evograd.baselines import reference_evograd_step, reference_noise, t1t2_step
from fixtures import KW, mlp_fixture


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("noise", ["sign", "gauss"])
def test_step_equals_combine_route_and_paper_reference(dtype, rtol, noise):
    """All routes fed the same noise. The paper's step always runs in float64:
    in float32 it differentiates sum_k w_k theta_k, whose <g, theta_k> cancel to
    the O(sigma) signal (losing ~log10(|theta|/sigma) digits), while the plugin
    works with <g, eps_k> directly. So float32 routes are compared with the
    float64 truth, to 1e-4 of its scale: float32 losses carry ~1e-7 relative
    error, amplified by 1/tau = 10 in the weights and by the c_j - cbar difference."""
    P, H, train, val = mlp_fixture(dtype)
    meta = evograd.EvoGrad(P, H, noise=noise, **KW)
    res = meta.step(lambda: train(P), lambda: val(P))
    step_grads = [h.grad.clone() for h in H]
    for h in H:
        h.grad = None

    seed, K = res.seed, KW["population"]
    cands = evograd.functional.candidates(P, seed, K, KW["sigma"], noise)
    losses = torch.stack([train(c) for c in cands])
    star = evograd.functional.combine(P, losses, KW["temperature"], seed, KW["sigma"], noise)
    combine_grads = torch.autograd.grad(val(star), H)

    P64, H64, train64, val64 = mlp_fixture(torch.float64)
    ref_noise = [[e.double() for e in eps] for eps in reference_noise(P, seed, K, KW["sigma"], noise)]
    reference_evograd_step(P64, H64, train64, val64, K, KW["sigma"], KW["temperature"], noise=ref_noise)
    ref_grads = [h.grad for h in H64]

    assert torch.allclose(res.losses.to(dtype), losses.detach(), rtol=rtol, atol=0)
    assert torch.allclose(res.weights, torch.softmax(-res.losses / KW["temperature"], 0), atol=1e-15)
    for a, b, c in zip(step_grads, combine_grads, ref_grads):
        scale = c.abs().max()
        assert scale > 0
        assert torch.allclose(a.double(), c, rtol=0, atol=rtol * scale)
        assert torch.allclose(b.double(), c, rtol=0, atol=rtol * scale)


def test_direct_term_when_validation_uses_lambda():
    P, H, train, val = mlp_fixture(torch.float64)
    extra = lambda: 0.7 * H[0].sum()
    evograd.EvoGrad(P, H, **KW).step(lambda: train(P), lambda: val(P) + extra())
    with_direct = H[0].grad.clone()
    for h in H:
        h.grad = None
    evograd.EvoGrad(P, H, **KW).step(lambda: train(P), lambda: val(P))
    assert torch.allclose(with_direct - H[0].grad, torch.tensor([0.7], dtype=torch.float64), atol=1e-12)


def test_grad_accumulates_like_backward():
    P, H, train, val = mlp_fixture(torch.float64)
    evograd.EvoGrad(P, H, **KW).step(lambda: train(P), lambda: val(P))
    once = [h.grad.clone() for h in H]
    evograd.EvoGrad(P, H, **KW).step(lambda: train(P), lambda: val(P))
    for h, g in zip(H, once):
        assert torch.allclose(h.grad, 2 * g, rtol=1e-14, atol=0)


def regression_fixture():
    g = torch.Generator().manual_seed(11)
    X, y = torch.randn(40, 6, generator=g, dtype=torch.float64), torch.randn(40, generator=g, dtype=torch.float64)
    Xv, yv = torch.randn(30, 6, generator=g, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64)
    theta = (torch.randn(6, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    lam = torch.full((6,), -1.0, dtype=torch.float64, requires_grad=True)  # log decay per weight
    train = lambda Q: ((X @ Q[0] - y) ** 2).mean() + (torch.exp(lam) * Q[0] ** 2).sum()
    val = lambda Q: ((Xv @ Q[0] - yv) ** 2).mean()
    return theta, lam, train, val


def test_small_sigma_mean_matches_t1t2_direction_and_predicted_scale():
    r"""Expanding the math of docs/design.md to first order in sigma, with
    l_k = l + <grad l, eps_k>, dl_k/dlam = dl/dlam + H eps_k (H = d2 l_T/dlam dtheta)
    and w_k ~ 1/K (when sigma*|grad l|/tau << 1):
        sum_j cot_j = 0, so  dL/dlam = -(1/tau) sum_j w_j (c_j - cbar) H eps_j,
        E[(c_j - cbar) eps_j] = sigma^2 (1 - 1/K) g        (E[eps eps^T] = sigma^2 I)
    hence E[dL/dlam] = -(sigma^2 (K-1) / (tau K)) H g, while T1-T2 gives
    -alpha H g. Same direction; norm ratio sigma^2 (K-1) / (tau K alpha)."""
    theta, lam, train, val = regression_fixture()
    K, sigma, tau, alpha, n = 4, 1e-3, 1.0, 1e-3, 3000
    t1t2_step([theta], [lam], train, val, alpha)
    t1t2 = lam.grad.clone()
    lam.grad = None
    meta = evograd.EvoGrad([theta], [lam], population=K, sigma=sigma, temperature=tau, seed=0)
    samples = []
    for _ in range(n):
        meta.step(lambda: train([theta]), lambda: val([theta]))
        samples.append(lam.grad.clone())
        lam.grad = None
    S = torch.stack(samples)
    mean = S.mean(0)
    cos = torch.dot(mean, t1t2) / (mean.norm() * t1t2.norm())
    predicted = sigma ** 2 * (K - 1) / (tau * K * alpha)
    ratio = (mean.norm() / t1t2.norm()).item()
    # Standard error of the ratio from the spread of samples along t1t2's direction.
    u = t1t2 / t1t2.norm()
    se = ((S @ u).std() / math.sqrt(n) / t1t2.norm()).item()
    assert cos > 0.9
    assert 4 * se < 0.1 * predicted, "not enough samples for the tolerance below"
    assert abs(ratio - predicted) < 0.1 * predicted


def test_t1t2_equals_finite_differences_of_unrolled_objective():
    """d/dlam of l_V(theta - alpha * grad_theta l_T(theta, lam)), central differences."""
    theta, lam, train, val = regression_fixture()
    alpha = 0.05
    t1t2_step([theta], [lam], train, val, alpha)
    analytic = lam.grad.clone()

    def unrolled():
        t = theta.detach().requires_grad_()
        (g,) = torch.autograd.grad(train([t]), t)
        return val([t.detach() - alpha * g]).item()

    h, fd = 1e-6, torch.zeros(6, dtype=torch.float64)
    for i in range(6):
        with torch.no_grad():
            lam[i] += h
        up = unrolled()
        with torch.no_grad():
            lam[i] -= 2 * h
        down = unrolled()
        with torch.no_grad():
            lam[i] += h
        fd[i] = (up - down) / (2 * h)
    # Central differences: O(h^2) truncation plus O(eps/h) rounding, ~1e-10 here.
    assert torch.allclose(analytic, fd, rtol=1e-6, atol=1e-9)


# ---- bad input ---------------------------------------------------------------


@pytest.mark.parametrize("kwargs,err,match", [
    (dict(population=1), ValueError, "population must be >= 2"),
    (dict(population=3, antithetic=True), ValueError, "even population"),
    (dict(sigma=0.0), ValueError, "sigma"),
    (dict(sigma=-1e-3), ValueError, "sigma"),
    (dict(temperature=0.0), ValueError, "temperature"),
    (dict(temperature=float("nan")), ValueError, "temperature"),
    (dict(noise="uniform"), ValueError, "noise must be one of"),
    (dict(population=2.5), TypeError, "population"),
])
def test_bad_construction(kwargs, err, match):
    P, H, _, _ = mlp_fixture(torch.float64)
    with pytest.raises(err, match=match):
        evograd.EvoGrad(P, H, **kwargs)


@pytest.mark.parametrize("bad_train,err,match", [
    (lambda P, H, tr: (lambda: tr(P) * torch.ones(2, dtype=torch.float64)), ValueError, "scalar"),
    (lambda P, H, tr: (lambda: tr(P) * float("nan")), ValueError, "not finite"),
    (lambda P, H, tr: (lambda: tr(P) * float("inf")), ValueError, "not finite"),
    (lambda P, H, tr: (lambda: (P[0] ** 2).sum()), ValueError, "does not depend"),
    (lambda P, H, tr: (lambda: H[0].sum() + (P[0] ** 2).sum()), ValueError, "hyperparameter 1"),
    (lambda P, H, tr: (lambda: 3.0), TypeError, "must return a tensor"),
])
def test_bad_closures_raise_and_leave_model_untouched(bad_train, err, match):
    P, H, train, val = mlp_fixture(torch.float64)
    before = [p.detach().clone() for p in P]
    meta = evograd.EvoGrad(P, H, **KW)
    with pytest.raises(err, match=match):
        meta.step(bad_train(P, H, train), lambda: val(P))
    for p, b in zip(P, before):
        assert torch.equal(p, b)
        assert p.requires_grad
    assert all(h.grad is None for h in H)
    with pytest.raises(ValueError, match="validation loss is not finite"):
        meta.step(lambda: train(P), lambda: val(P) * float("nan"))
    with pytest.raises(TypeError, match="callables"):
        meta.step(None, lambda: val(P))
    assert all(torch.equal(p, b) for p, b in zip(P, before))


def test_scale_t1t2_multiplies_the_candidate_part_only():
    P, H, train, val = mlp_fixture(torch.float64)
    plain = evograd.EvoGrad(P, H, **KW)
    plain.step(lambda: train(P), lambda: val(P))
    want = [h.grad.clone() for h in H]
    for h in H:
        h.grad = None
    scaled = evograd.EvoGrad(P, H, scale="t1t2", inner_lr=0.2, **KW)
    factor = KW["temperature"] * 0.2 / (KW["sigma"] ** 2 * (1 - 1 / KW["population"]))
    assert scaled.hypergradient_scale == pytest.approx(factor, rel=1e-15)
    scaled.step(lambda: train(P), lambda: val(P))
    for h, w in zip(H, want):
        assert torch.allclose(h.grad, factor * w, rtol=1e-12, atol=0)
    anti = evograd.EvoGrad(P, H, scale="t1t2", inner_lr=0.2, antithetic=True, **KW)
    assert anti.hypergradient_scale == pytest.approx(factor * (1 - 1 / KW["population"]))
    for bad, match in ((dict(scale="t1t2"), "needs inner_lr"), (dict(inner_lr=0.1), "only with"),
                       (dict(scale="t2", inner_lr=0.1), "scale must"),
                       (dict(scale="t1t2", inner_lr=-1.0), "inner_lr must")):
        with pytest.raises(ValueError, match=match):
            evograd.EvoGrad(P, H, **bad, **KW)


def test_validation_closure_may_return_aux_outputs():
    P, H, train, val = mlp_fixture(torch.float64)
    meta = evograd.EvoGrad(P, H, **KW)
    r = meta.step(lambda: train(P), lambda: (val(P), P[0].detach().clone(), "tag"))
    assert r.aux[1] == "tag"
    assert not torch.equal(r.aux[0], P[0].detach())  # taken at theta*, and P is back at theta
    r = meta.step(lambda: train(P), lambda: val(P))
    assert r.aux is None
