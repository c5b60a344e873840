"""keep_train_grad: the inner pass's gradient of the training loss at the
current weights and lambda, left in the parameters' .grad for the model's
optimiser (one training pass per iteration instead of two). Checked against
plain autograd on the same closure and the same random draw, accumulated as
backward() accumulates, without changing lambda's gradient; off, the model's
.grad is untouched."""
import pytest
import torch

import evograd
from test_jvp import ALPHA, small

ESTIMATORS = ("jvp", "lookahead")


def plain_gradient(model, train, seed):
    """grad_theta l_T at theta by autograd, with the step's random draw."""
    torch.manual_seed(seed)
    return torch.autograd.grad(train(), list(model.parameters()))


def step(model, lam, train, val, seed, **options):
    meta = evograd.EvoGrad(model, [lam], inner_lr=ALPHA, **options)
    torch.manual_seed(seed)
    meta.step(train, val)
    return lam.grad.clone()


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_the_kept_gradient_is_the_training_losss_at_theta(estimator):
    model, lam, _, train, val = small()
    want = plain_gradient(model, train, 3)
    without = step(model, lam, train, val, 3, estimator=estimator)
    assert all(p.grad is None for p in model.parameters())  # off: the model as it was
    lam.grad = None
    with_it = step(model, lam, train, val, 3, estimator=estimator, keep_train_grad=True)
    assert torch.equal(with_it, without)  # lambda's gradient does not change
    for p, g in zip(model.parameters(), want):
        assert torch.equal(p.grad, g)  # the same pass, the same bits
    # The dropout draw matters: another seed gives another gradient.
    other = plain_gradient(model, train, 4)
    assert not all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), other))


def test_the_kept_gradient_accumulates_as_backward_does():
    model, lam, _, train, val = small()
    want = plain_gradient(model, train, 3)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = [p.grad for p in model.parameters()]
    step(model, lam, train, val, 3, estimator="jvp", keep_train_grad=True)
    for p, b, g in zip(model.parameters(), before, want):
        assert p.grad is b  # in place, as AccumulateGrad adds into an existing .grad
        assert torch.allclose(p.grad, 1 + g, rtol=0, atol=1e-15)


def test_the_paper_estimator_refuses_it():
    model, lam, _, _, _ = small()
    with pytest.raises(ValueError, match="estimator 'evograd' does not use keep_train_grad"):
        evograd.EvoGrad(model, [lam], keep_train_grad=True)


def test_a_parameter_the_loss_does_not_use_keeps_its_grad():
    """As after backward(): no .grad appears where the loss has no path (an
    optimiser with weight decay would otherwise move it)."""
    model, lam, _, train, val = small()
    spare = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    model.register_parameter("spare", spare)
    step(model, lam, train, val, 3, estimator="jvp", keep_train_grad=True)
    assert spare.grad is None
    assert all(p.grad is not None for n, p in model.named_parameters() if n != "spare")


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_the_buffers_are_left_as_the_skipped_forward_leaves_them(estimator):
    """BatchNorm's running statistics: the loop that skips its own forward
    still sees them updated once, as that forward at theta would have, bit
    for bit; without the option, or when the step fails, as they were."""
    import copy
    from torch import nn
    from torch.nn import functional as F
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3)).double()
    lam = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(3, (10,))

    def train(net):
        net.train()
        return F.cross_entropy(net(x * (1 + lam[0])), y)

    def val(net, bad=False):
        net.eval()
        loss = F.cross_entropy(net(x[:5]), y[:5])
        return loss * float("nan") if bad else loss
    found = [b.clone() for b in model.buffers()]
    reference = copy.deepcopy(model)
    train(reference)  # the skipped forward
    after = list(reference.buffers())
    assert not torch.equal(after[0], found[0])  # there is an update to lose

    def run(**options):
        meta = evograd.EvoGrad(model, [lam], inner_lr=ALPHA, estimator=estimator, **options)
        meta.step(lambda: train(model), lambda: val(model))
    for keep, want in ((False, found), (True, after)):
        run(keep_train_grad=keep)
        assert all(torch.equal(b, w) for b, w in zip(model.buffers(), want)), keep
        for b, f in zip(model.buffers(), found):
            b.copy_(f)
        for p in model.parameters():
            p.grad = None
    meta = evograd.EvoGrad(model, [lam], inner_lr=ALPHA, estimator=estimator, keep_train_grad=True)
    with pytest.raises(ValueError, match="validation loss is not finite"):
        meta.step(lambda: train(model), lambda: val(model, bad=True))
    assert all(torch.equal(b, f) for b, f in zip(model.buffers(), found))
    assert all(p.grad is None for p in model.parameters())
