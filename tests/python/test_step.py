"""EvoGrad.step against the combine route, the paper's plain step and T1-T2;
restoration, reproducibility and bad input."""
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

import evograd
from evograd.baselines import reference_evograd_step, reference_noise, t1t2_step


def mlp_fixture(dtype):
    """A small MLP with a hyperparameter inside (log weight decay of layer 1)
    and one outside (per-sample loss weights). Values are float32-representable,
    so the float32 and float64 fixtures hold the same numbers."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0, uniform=False):
        t = torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1 if uniform else \
            torch.randn(*shape, generator=g, dtype=torch.float64)
        return (t * scale).to(torch.float32).to(dtype)

    P = [rand(8, 4, scale=0.5), torch.zeros(8, dtype=dtype), rand(3, 8, scale=0.5), torch.zeros(3, dtype=dtype)]
    P = [p.requires_grad_() for p in P]
    log_decay = torch.tensor([-3.0], dtype=dtype, requires_grad=True)
    sample_logits = rand(16, uniform=True).requires_grad_()
    x, y = rand(16, 4), rand(16, 3)
    xv, yv = rand(12, 4), rand(12, 3)

    def net(Q, inp):
        return torch.tanh(inp @ Q[0].T + Q[1]) @ Q[2].T + Q[3]

    def train(Q):
        per_sample = ((net(Q, x) - y) ** 2).sum(1)
        return (torch.sigmoid(sample_logits) * per_sample).mean() + torch.exp(log_decay).sum() * (Q[0] ** 2).sum()

    def val(Q):
        return ((net(Q, xv) - yv) ** 2).sum(1).mean()

    return P, [log_decay, sample_logits], train, val


KW = dict(population=4, sigma=0.01, temperature=0.1, seed=123)


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


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(6, 2)
        self.lam = nn.Parameter(torch.tensor([0.1]))  # a hyperparameter inside the model

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.bn(self.fc(x)))))


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
            {n: p.requires_grad for n, p in model.named_parameters()})


def assert_same(model, snap):
    state, grads, flags = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
        assert v.dtype == state[k].dtype
    for n, p in model.named_parameters():
        assert (p.grad is None) == (grads[n] is None), n
        if p.grad is not None:
            assert torch.equal(p.grad, grads[n]), n
        assert p.requires_grad == flags[n]


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


def test_seeds_advance_and_runs_reproduce():
    P, H, train, val = mlp_fixture(torch.float64)
    meta = evograd.EvoGrad(P, H, **KW)
    r = [meta.step(lambda: train(P), lambda: val(P)) for _ in range(3)]
    assert [x.seed for x in r] == [evograd.step_seed(123, t) for t in range(3)]
    assert len({x.seed for x in r}) == 3 and not torch.equal(r[0].losses, r[1].losses)
    # SplitMix64's published first outputs for state 0 are mix64(t * GOLDEN):
    # the "mixed" schedule of base 0 (as signed 64-bit integers).
    known = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    signed = [k - (1 << 64) if k >> 63 else k for k in known]
    assert [evograd.step_seed(0, t) for t in (1, 2, 3)] == signed
    # Nearby bases: unrelated sequences (the old rule shared all but one seed).
    a = {evograd.step_seed(0, t) for t in range(1000)}
    b = {evograd.step_seed(1, t) for t in range(1000)}
    assert len(a) == 1000 and not a & b
    old_a = {evograd.step_seed(0, t, "consecutive") for t in range(1000)}
    old_b = {evograd.step_seed(1, t, "consecutive") for t in range(1000)}
    assert len(old_a & old_b) == 999 and evograd.step_seed(2**63 - 1, 1, "consecutive") == 0
    legacy = evograd.EvoGrad(P, H, seed_schedule="consecutive", **KW)
    assert [legacy.step(lambda: train(P), lambda: val(P)).seed for _ in range(3)] == [123, 124, 125]
    with pytest.raises(ValueError, match="seed_schedule"):
        evograd.EvoGrad(P, H, seed_schedule="random", **KW)


def test_default_seed_leaves_the_random_stream_alone_and_reproduces(tmp_path):
    P, H, _, _ = mlp_fixture(torch.float64)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    first, second = evograd.EvoGrad(P, H).seed, evograd.EvoGrad(P, H).seed
    assert torch.equal(torch.get_rng_state(), state), "construction drew from torch's generator"
    assert first != second
    code = ("import torch, evograd; torch.manual_seed(%d); p = torch.zeros(2, requires_grad=True); "
            "print(evograd.EvoGrad([p], [torch.zeros(1, requires_grad=True)], buffers=[]).seed)")
    runs = [subprocess.run([sys.executable, "-c", code % s], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300) for s in (7, 7, 8)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout != runs[2].stdout


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


def test_overlapping_sets_and_non_leaf_hyperparameters():
    P, H, _, _ = mlp_fixture(torch.float64)
    with pytest.raises(ValueError, match=r"params\[0\] and hyperparams\[0\] share memory"):
        evograd.EvoGrad(P, [P[0]])
    with pytest.raises(ValueError, match="leaf"):
        evograd.EvoGrad(P, [H[0] * 2])
    with pytest.raises(TypeError, match="tensor"):
        evograd.EvoGrad(P, ["lambda"])


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
