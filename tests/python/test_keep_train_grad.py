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
