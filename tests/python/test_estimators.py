"""The estimators against the exact one-step unrolled hypergradient (T1-T2),
computed by double backward in float64 (evograd.baselines.t1t2_step), on
problems shaped like the applications: a weighting net on per-example costs
(MWN, with the official detached input), feature-wise scales inside the
network (LFT), a transformation between layers (MetaXL), and a validation
loss that depends on lambda directly."""
import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import evograd
from evograd.baselines import t1t2_step

D = torch.float64
ALPHA = 0.1


class Net(nn.Module):
    def __init__(self, g):
        super().__init__()
        self.l1, self.l2 = nn.Linear(5, 7).double(), nn.Linear(7, 3).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=D) * 0.6)

    def forward(self, x, mid=None):
        h = torch.tanh(self.l1(x))
        if mid is not None:
            h = mid(h)
        return self.l2(h)


def data(g, n):
    return torch.randn(n, 5, generator=g, dtype=D), torch.randint(3, (n,), generator=g)


def problems():
    """name -> (model, hyperparameters, train(forward), val(forward)); forward
    maps inputs with the model or a functional stand-in for it."""
    g = torch.Generator().manual_seed(0)
    x, y = data(g, 24)
    xv, yv = data(g, 16)

    model = Net(g)
    vnet = nn.Sequential(nn.Linear(1, 6), nn.Tanh(), nn.Linear(6, 1), nn.Sigmoid()).double()

    def mwn_train(f):
        cost = F.cross_entropy(f(x), y, reduction="none").reshape(-1, 1)
        return (cost * vnet(evograd.detached(cost))).mean()
    yield "mwn", model, list(vnet.parameters()), mwn_train, lambda f: F.cross_entropy(f(xv), yv)

    model = Net(g)
    film = torch.full((7,), 0.3, dtype=D, requires_grad=True)

    def lft_train(f):
        return F.cross_entropy(f(x, lambda h: h * (1 + film)), y)
    yield "lft", model, [film], lft_train, lambda f: F.cross_entropy(f(xv), yv)

    model = Net(g)
    rtn = nn.Sequential(nn.Linear(7, 7), nn.Tanh()).double()

    def metaxl_train(f):
        return F.cross_entropy(f(x, lambda h: h + rtn(h)), y) + F.cross_entropy(f(xv[:8]), yv[:8])
    yield "metaxl", model, list(rtn.parameters()), metaxl_train, \
        lambda f: F.cross_entropy(f(xv[8:]), yv[8:])

    model = Net(g)
    decay = torch.tensor([0.05], dtype=D, requires_grad=True)

    def wd_train(f):
        return F.cross_entropy(f(x), y) + decay * sum((p ** 2).sum() for p in model.parameters())
    yield "direct", model, [decay], wd_train, \
        lambda f: F.cross_entropy(f(xv), yv) + decay.sum() ** 2


def exact(model, hyper, train, val, alpha):
    names = [n for n, _ in model.named_parameters()]

    def call(Q):
        return lambda *a: torch.func.functional_call(model, dict(zip(names, Q)), a)
    for h in hyper:
        h.grad = None
    params = list(model.parameters())
    t1t2_step(params, hyper, lambda Q: train(call(Q)), lambda Q: val(call(Q)), alpha)
    return torch.cat([h.grad.flatten() for h in hyper])


def estimate(meta, hyper, model, train, val):
    for h in hyper:
        h.grad = None
    result = meta.step(lambda: train(model), lambda: val(model))
    return torch.cat([h.grad.flatten() for h in hyper]), result


def cos(a, b):
    return float(a @ b / (a.norm() * b.norm()))


needs_func = pytest.mark.skipif(not hasattr(torch, "func"), reason="the reference uses torch.func")


@needs_func
@pytest.mark.parametrize("name", ["mwn", "lft", "metaxl", "direct"])
def test_lookahead_equals_exact_t1t2_up_to_its_difference_step(name):
    """A central difference errs by O(s^2): at s = 1e-4 in float64 the
    estimate equals the exact hypergradient to ~1e-7 relative (third
    derivatives of order 1, rounding 1e-16/s^2 ~ 1e-8)."""
    model, hyper, train, val = next((m, h, t, v) for n, m, h, t, v in problems() if n == name)
    reference = exact(model, hyper, train, val, ALPHA)
    meta = evograd.EvoGrad(model, hyper, estimator="lookahead", inner_lr=ALPHA, fd_step=1e-4)
    before = [p.detach().clone() for p in model.parameters()]
    got, result = estimate(meta, hyper, model, train, val)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert reference.norm() > 0
    assert torch.allclose(got, reference, rtol=0, atol=1e-6 * reference.norm()), (got, reference)
    # the validation loss reported is T1-T2's, at theta' = theta - alpha grad
    assert math.isfinite(result.val_loss) and len(result.losses) == 3


@needs_func
def test_lookahead_error_shrinks_as_the_step_squared():
    model, hyper, train, val = next((m, h, t, v) for n, m, h, t, v in problems() if n == "lft")
    reference = exact(model, hyper, train, val, ALPHA)
    errors = []
    for s in (4e-2, 2e-2, 1e-2):
        meta = evograd.EvoGrad(model, hyper, estimator="lookahead", inner_lr=ALPHA, fd_step=s)
        errors.append(float((estimate(meta, hyper, model, train, val)[0] - reference).norm()))
    # halving s quarters the error (second order), within 25%
    for big, small in zip(errors, errors[1:]):
        assert 3.0 < big / small < 5.0, errors


@needs_func
def test_detached_keeps_the_official_semantics():
    """With cost.detach() instead of evograd.detached(cost), the perturbed
    evaluations feed the weighting net moved inputs: the estimate is then of
    the other (non-detached) objective, and measurably differs."""
    model, hyper, train, val = next((m, h, t, v) for n, m, h, t, v in problems() if n == "mwn")
    reference = exact(model, hyper, train, val, ALPHA)
    g = torch.Generator().manual_seed(0)
    x, y = data(g, 24)
    vnet = hyper  # the weighting net's tensors

    def plain_detach(f):
        cost = F.cross_entropy(f(x), y, reduction="none").reshape(-1, 1)
        h = torch.tanh(F.linear(cost.detach(), vnet[0], vnet[1]))
        return (cost * torch.sigmoid(F.linear(h, vnet[2], vnet[3]))).mean()
    meta = evograd.EvoGrad(model, hyper, estimator="lookahead", inner_lr=ALPHA, fd_step=1e-4)
    with_base = estimate(meta, hyper, model, train, val)[0]
    moved = estimate(meta, hyper, model, plain_detach, val)[0]
    assert (with_base - reference).norm() < 1e-6 * reference.norm()
    assert (moved - reference).norm() > 1e-3 * reference.norm()


def test_lookahead_at_zero_learning_rate_is_zero_as_t1t2():
    model, hyper, train, val = next((m, h, t, v) for n, m, h, t, v in problems() if n == "lft")
    meta = evograd.EvoGrad(model, hyper, estimator="lookahead", inner_lr=0.0)
    got, _ = estimate(meta, hyper, model, train, val)
    assert torch.equal(got, torch.zeros_like(got))


def test_estimator_options_are_checked():
    model = Net(torch.Generator().manual_seed(0))
    lam = torch.zeros(1, dtype=D, requires_grad=True)
    assert evograd.ESTIMATORS == ("evograd", "lookahead", "jvp")
    with pytest.raises(ValueError, match="estimator must be one of"):
        evograd.EvoGrad(model, lam, estimator="es")
    with pytest.raises(ValueError, match="needs inner_lr"):
        evograd.EvoGrad(model, lam, estimator="lookahead")
    with pytest.raises(ValueError, match="fd_step must be finite and > 0"):
        evograd.EvoGrad(model, lam, estimator="lookahead", inner_lr=0.1, fd_step=0.0)
    meta = evograd.EvoGrad(model, lam, estimator="lookahead", inner_lr=0.1)
    with pytest.raises(AttributeError, match="fixed at construction"):
        meta.estimator = "evograd"
    with pytest.raises(ValueError, match="other options"):
        evograd.EvoGrad(model, lam, seed=0).load_state_dict(meta.state_dict())


def test_detached_outside_a_step_is_detach():
    t = torch.ones(3, requires_grad=True) * 2
    d = evograd.detached(t)
    assert not d.requires_grad and torch.equal(d, t.detach())


@needs_func
def test_lookahead_sees_one_draw_of_the_training_closures_randomness():
    """LFT's FT layers draw random scales in every training forward: the
    base pass and both sides of the difference replay one RNG state, the
    draw T1-T2 differentiates."""
    g = torch.Generator().manual_seed(5)
    model, (x, y), (xv, yv) = Net(g), data(g, 24), data(g, 16)
    film = torch.full((7,), 0.3, dtype=D, requires_grad=True)

    def train(f):
        return F.cross_entropy(f(x, lambda h: h * (1 + F.softplus(film) * torch.randn(7, dtype=D))), y)

    def val(f):
        return F.cross_entropy(f(xv), yv)
    rng = torch.get_rng_state()
    names = [n for n, _ in model.named_parameters()]
    film.grad = None
    torch.set_rng_state(rng)
    t1t2_step(list(model.parameters()), [film],
              lambda Q: train(lambda *a: torch.func.functional_call(model, dict(zip(names, Q)), a)),
              lambda Q: val(lambda *a: torch.func.functional_call(model, dict(zip(names, Q)), a)),
              ALPHA)
    reference = film.grad.clone()
    torch.set_rng_state(rng)
    meta = evograd.EvoGrad(model, [film], estimator="lookahead", inner_lr=ALPHA, fd_step=1e-4)
    got = estimate(meta, [film], model, train, val)[0]
    assert reference.norm() > 0
    assert torch.allclose(got, reference, rtol=0, atol=1e-6 * reference.norm())


@needs_func
@pytest.mark.parametrize("name", ["mwn", "lft", "metaxl", "direct"])
def test_lookahead_default_step_matches_exact_t1t2(name):
    """fd_step=None: sqrt(eps) * max(1, |theta|), in float64 ~1.5e-8 |theta|."""
    model, hyper, train, val = next((m, h, t, v) for n, m, h, t, v in problems() if n == name)
    reference = exact(model, hyper, train, val, ALPHA)
    meta = evograd.EvoGrad(model, hyper, estimator="lookahead", inner_lr=ALPHA)
    got, _ = estimate(meta, hyper, model, train, val)
    assert torch.allclose(got, reference, rtol=0, atol=1e-6 * reference.norm()), (got, reference)
