"""What the official MWN, LFT and MetaXL loops need of the step beyond the
math: MetaModule hyperparameters, learning-rate schedules, unused
hyperparameters, graphs that span the step, a frozen encoder, the loss as a
tensor, collapse reported, and messages that name the mistake. References:
plain autograd on the same model, and the step itself under another option."""
import math
import warnings

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import evograd
from evograd import options

D = torch.float64
KW = dict(population=4, sigma=1e-3, temperature=0.5, seed=3)


class MetaVNet(nn.Module):
    """The official MWN VNet: a MetaModule, its weights buffers that require grad."""

    def __init__(self, hidden=8):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.register_buffer("w1", (torch.randn(hidden, 1, generator=g, dtype=D) * 0.5).requires_grad_())
        self.register_buffer("b1", torch.zeros(hidden, dtype=D, requires_grad=True))
        self.register_buffer("w2", (torch.randn(1, hidden, generator=g, dtype=D) * 0.5).requires_grad_())
        self.register_buffer("b2", torch.zeros(1, dtype=D, requires_grad=True))

    def forward(self, x):
        return torch.sigmoid(F.linear(torch.relu(F.linear(x, self.w1, self.b1)), self.w2, self.b2))


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D) * 0.5)
    x, y = torch.randn(16, 5, generator=g, dtype=D), torch.randint(3, (16,), generator=g)
    xv, yv = torch.randn(12, 5, generator=g, dtype=D), torch.randint(3, (12,), generator=g)
    return model, x, y, xv, yv


def mwn_closures(model, vnet, x, y, xv, yv):
    def train():
        cost = F.cross_entropy(model(x), y, reduction="none").reshape(-1, 1)
        return (cost * vnet(cost.detach())).sum() / len(cost)
    return train, lambda: F.cross_entropy(model(xv), yv)


def grads(hyper):
    return [None if h.grad is None else h.grad.clone() for h in hyper]


# ---- 1. hyperparameters that are buffers --------------------------------------

def test_metamodule_vnet_as_hyperparameters_equals_its_tensors():
    model, *data = problem()
    vnet = MetaVNet()
    tensors = [vnet.w1, vnet.b1, vnet.w2, vnet.b2]
    evograd.EvoGrad(model, vnet, **KW).step(*mwn_closures(model, vnet, *data))
    by_module = grads(tensors)
    for t in tensors:
        t.grad = None
    evograd.EvoGrad(model, tensors, **KW).step(*mwn_closures(model, vnet, *data))
    assert all(g is not None and torch.any(g != 0) for g in by_module)
    for a, b in zip(by_module, grads(tensors)):
        assert torch.equal(a, b)


def test_module_without_hyperparameters_mentions_buffers():
    model, *_ = problem()
    with pytest.raises(ValueError, match="no hyperparameters.*buffers with requires_grad=True"):
        evograd.EvoGrad(model, nn.ReLU())


# ---- 2. learning-rate schedules -------------------------------------------------

def scaled_grad(lr_setting, steps=1, **extra):
    model, *data = problem()
    vnet = MetaVNet()
    meta = evograd.EvoGrad(model, vnet, scale="t1t2", inner_lr=0.1, **KW, **extra)
    for _ in range(steps):
        for h in meta.hyperparams:
            h.grad = None
        lr_setting(meta)
        meta.step(*mwn_closures(model, vnet, *data))
    return meta, grads(meta.hyperparams)


def test_inner_lr_assignment_takes_effect_and_is_saved():
    _, base = scaled_grad(lambda m: None)
    meta, doubled = scaled_grad(lambda m: setattr(m, "inner_lr", 0.2))
    for a, b in zip(base, doubled):
        assert torch.allclose(b, 2 * a, rtol=1e-12, atol=0)
    assert meta.inner_lr == 0.2 and meta.state_dict()["inner_lr"] == 0.2


def test_inner_lr_per_step_and_zero_as_in_t1t2():
    model, *data = problem()
    vnet = MetaVNet()
    meta = evograd.EvoGrad(model, vnet, scale="t1t2", inner_lr=0.1, **KW)
    meta.step(*mwn_closures(model, vnet, *data), inner_lr=0.0)
    # T1-T2 at learning rate 0: theta' = theta, and this objective's
    # validation loss does not see lambda: exactly zero.
    assert all(torch.equal(g, torch.zeros_like(g)) for g in grads(meta.hyperparams))
    assert meta.inner_lr == 0.0


def test_inner_lr_follows_an_optimiser_and_its_scheduler():
    model, *data = problem()
    vnet = MetaVNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1], gamma=0.1)
    meta = evograd.EvoGrad(model, vnet, scale="t1t2", inner_lr=opt, **KW)
    ref = evograd.EvoGrad(model, MetaVNet(), scale="t1t2", inner_lr=0.1, **KW)
    assert meta.inner_lr == 0.1
    sched.step()
    assert meta.inner_lr == pytest.approx(0.01)
    assert meta.hypergradient_scale == pytest.approx(ref.hypergradient_scale / 10, rel=1e-12)
    opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "lr": 0.5})
    with pytest.raises(ValueError, match="different learning rates"):
        meta.step(*mwn_closures(model, vnet, *data))


def test_other_options_cannot_be_changed_silently():
    model, *_ = problem()
    meta = evograd.EvoGrad(model, MetaVNet(), **KW)
    # Every row of options.def but inner_lr (seed too: a seed changed on one
    # rank would silently draw other noise than the others').
    fixed = [o.name for o in options.OPTIONS if o.name != "inner_lr"]
    assert "seed" in fixed and len(fixed) == len(options.OPTIONS) - 1
    for name in fixed + ["params", "hyperparams", "buffers", "hypergradient_scale"]:
        before = getattr(meta, name)
        with pytest.raises(AttributeError, match=f"EvoGrad.{name} is fixed"):
            setattr(meta, name, before)
        assert getattr(meta, name) is before
    with pytest.raises(ValueError, match="only with scale='t1t2'"):
        meta.inner_lr = 0.1
    scaled = evograd.EvoGrad(model, MetaVNet(), scale="t1t2", inner_lr=0.1, **KW)
    for bad in (-0.1, math.inf, math.nan):
        with pytest.raises(ValueError, match="finite and >= 0"):
            scaled.inner_lr = bad
    assert scaled.inner_lr == 0.1


def test_checkpoint_carries_the_learning_rate():
    model, *_ = problem()
    saved = evograd.EvoGrad(model, MetaVNet(), scale="t1t2", inner_lr=0.1, **KW)
    saved.inner_lr = 0.003
    saved.steps_taken = 7
    loaded = evograd.EvoGrad(model, MetaVNet(), scale="t1t2", inner_lr=0.5, **KW)
    loaded.load_state_dict(saved.state_dict())
    assert loaded.inner_lr == 0.003 and loaded.steps_taken == 7
    assert loaded.hypergradient_scale == saved.hypergradient_scale


# ---- 3. unused hyperparameters ---------------------------------------------------

def test_allow_unused_leaves_unused_hyperparameters_without_grad():
    model, *data = problem()
    vnet, other = MetaVNet(), MetaVNet()
    train, val = mwn_closures(model, vnet, *data)
    with pytest.raises(ValueError, match="hyperparameter 4.*allow_unused=True"):
        evograd.EvoGrad(model, [*vnet.buffers(), *other.buffers()], **KW).step(train, val)
    for t in vnet.buffers():
        t.grad = None
    evograd.EvoGrad(model, [*vnet.buffers(), *other.buffers()], allow_unused=True,
                    **KW).step(train, val)
    both = grads(list(vnet.buffers()))
    assert all(t.grad is None for t in other.buffers())
    for t in vnet.buffers():
        t.grad = None
    evograd.EvoGrad(model, vnet, **KW).step(train, val)
    for a, b in zip(both, grads(list(vnet.buffers()))):
        assert torch.equal(a, b)


# ---- 4. graphs that span the step -------------------------------------------------

def test_a_graph_recorded_before_the_step_is_valid_and_exact_after_it():
    """LFT's order: an auxiliary loss built before the meta block, backpropagated
    after it. Its saved tensors are the parameters themselves (tanh/linear
    save their inputs and weights) and BatchNorm's eval statistics."""
    model, x, y, xv, yv = problem()
    bn = nn.BatchNorm1d(5).double().eval()
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
    full = nn.Sequential(bn, model)
    vnet = MetaVNet()
    params = list(full.parameters())
    reference = torch.autograd.grad(F.cross_entropy(full(x), y), params)
    aux = F.cross_entropy(full(x), y)            # recorded before the step
    evograd.EvoGrad(full, vnet, **KW).step(*mwn_closures(full, vnet, x, y, xv, yv))
    after = torch.autograd.grad(aux, params)     # no version error, and exact
    for a, b in zip(reference, after):
        assert torch.equal(a, b)


def test_the_step_leaves_version_counters_alone():
    model, *data = problem()
    vnet = MetaVNet()
    before = [p._version for p in model.parameters()]
    evograd.EvoGrad(model, vnet, **KW).step(*mwn_closures(model, vnet, *data))
    assert [p._version for p in model.parameters()] == before


# ---- 5. a frozen encoder during head-only steps ---------------------------------

def test_tensors_neither_perturbed_nor_hyperparameters_record_nothing():
    model, x, y, xv, yv = problem()
    lam = torch.zeros(6, dtype=D, requires_grad=True)
    encoder, head = model[0], model[2]
    seen = []

    def train():
        seen.append((encoder.weight.requires_grad, head.weight.requires_grad))
        return F.cross_entropy(head(model[1](encoder(x)) + lam), y)

    def val():
        seen.append((encoder.weight.requires_grad, head.weight.requires_grad))
        return F.cross_entropy(model(xv), yv)

    meta = evograd.EvoGrad(list(head.parameters()), lam, module=model, **KW)
    meta.step(train, val)
    assert seen == [(False, False)] * KW["population"] + [(False, True)]
    assert encoder.weight.requires_grad and head.weight.requires_grad
    frozen = lam.grad.clone()
    # the same values as a step where the encoder would record its graph
    lam.grad = None
    evograd.EvoGrad(list(head.parameters()), lam, buffers=list(model.buffers()), **KW).step(train, val)
    assert torch.equal(frozen, lam.grad)


# ---- 6. the loss as a tensor -----------------------------------------------------

def test_result_carries_the_validation_loss_tensor():
    model, *data = problem()
    vnet = MetaVNet()
    r = evograd.EvoGrad(model, vnet, **KW).step(*mwn_closures(model, vnet, *data))
    assert isinstance(r.val_loss_tensor, torch.Tensor) and not r.val_loss_tensor.requires_grad
    assert r.val_loss_tensor.item() == r.val_loss
    assert 1.0 <= r.ess <= KW["population"] and not r.collapsed


# ---- 7. collapse is never silent ---------------------------------------------------

def test_collapsed_weights_warn_and_are_reported():
    model, *data = problem()
    vnet = MetaVNet()
    train, val = mwn_closures(model, vnet, *data)
    meta = evograd.EvoGrad(model, vnet, population=2, sigma=0.5, temperature=1e-4, seed=0)
    with pytest.warns(RuntimeWarning, match="collapsed.*effective sample size"):
        r = meta.step(train, val)
    assert r.collapsed and r.ess < evograd.step.COLLAPSE_ESS
    w = r.weights.tolist()
    assert r.ess == pytest.approx(1 / sum(v * v for v in w), rel=1e-12)


def test_equal_candidate_losses_warn():
    """What bfloat16 did: sigma below the loss's resolution, every candidate
    the same loss."""
    model, x, y, xv, yv = problem()
    lam = torch.ones(1, dtype=D, requires_grad=True)
    meta = evograd.EvoGrad(model, lam, **KW)
    with pytest.warns(RuntimeWarning, match="losses are equal"):
        r = meta.step(lambda: (lam * 2.0).sum() + 0 * model(x).sum(),
                      lambda: F.cross_entropy(model(xv), yv))
    assert r.collapsed and r.ess == pytest.approx(KW["population"])


def test_a_healthy_step_does_not_warn():
    model, *data = problem()
    vnet = MetaVNet()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evograd.EvoGrad(model, vnet, **KW).step(*mwn_closures(model, vnet, *data))


# ---- 8. messages -------------------------------------------------------------------

def test_swapped_params_and_hyperparameters_are_named():
    model, *_ = problem()
    vnet = nn.Linear(1, 1).double()
    with pytest.raises(ValueError, match="did you swap params and hyperparams"):
        evograd.EvoGrad(vnet, list(model.parameters()), module=model)
