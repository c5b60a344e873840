"""evograd.baselines against closed forms on a quadratic problem:
L_train(theta, lambda) = lambda/2 |theta - a|^2, L_val(theta) = 1/2 |theta - b|^2."""
import pytest
import torch

from evograd.baselines import reference_evograd_step, t1t2_step

A = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
B = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)


def problem():
    theta = torch.tensor([0.3, 0.1, -0.4], dtype=torch.float64, requires_grad=True)
    lam = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)

    def train(Q):
        return lam / 2 * ((Q[0] - A) ** 2).sum()

    def val(Q):
        return ((Q[0] - B) ** 2).sum() / 2
    return theta, lam, train, val


def test_t1t2_is_the_unrolled_closed_form():
    theta, lam, train, val = problem()
    alpha = 0.2
    loss = t1t2_step([theta], [lam], train, val, alpha)
    t = theta.detach()
    fast = t - alpha * lam.detach() * (t - A)  # one SGD step on the training loss
    assert loss.item() == pytest.approx(((fast - B) ** 2).sum().item() / 2, rel=1e-15)
    want = ((fast - B) * (-alpha * (t - A))).sum()  # d L_val(fast) / d lambda
    assert lam.grad.item() == pytest.approx(want.item(), rel=1e-13)
    t1t2_step([theta], [lam], train, val, alpha)  # accumulates, as backward does
    assert lam.grad.item() == pytest.approx(2 * want.item(), rel=1e-13)


def test_reference_evograd_is_the_weighted_candidates_closed_form():
    theta, lam, train, val = problem()
    tau, l_ = 0.1, lam.detach()
    noise = [[torch.tensor([0.1, -0.1, 0.1], dtype=torch.float64)],
             [torch.tensor([-0.1, -0.1, 0.1], dtype=torch.float64)],
             [torch.tensor([0.1, 0.1, -0.1], dtype=torch.float64)]]
    reference_evograd_step([theta], [lam], train, val, population=3, temperature=tau, noise=noise)
    thetas = [theta.detach() + e[0] for e in noise]
    half_sq = torch.stack([((t - A) ** 2).sum() / 2 for t in thetas])  # d l_k / d lambda
    w = torch.softmax(-l_ * half_sq / tau, 0)
    dw = -(w / tau) * (half_sq - (w * half_sq).sum())  # d w_k / d lambda
    star = sum(w[k] * thetas[k] for k in range(3))
    want = ((star - B) * sum(dw[k] * thetas[k] for k in range(3))).sum()
    assert lam.grad.item() == pytest.approx(want.item(), rel=1e-12)


def test_reference_evograd_refuses_a_noise_list_of_another_size():
    theta, lam, train, val = problem()
    with pytest.raises(ValueError, match="noise has 1 candidates, population is 2"):
        reference_evograd_step([theta], [lam], train, val, population=2,
                               noise=[[torch.zeros(3, dtype=torch.float64)]])
