"""evograd.functional: the candidates and theta* as parameter lists, checked
against the plain-Python Philox reference and the paper's weighted sum."""
import pytest
import torch

import evograd
from evograd import functional
from reference import eps_list

SHAPES = [(3, 5), (7,), (2, 2, 2)]


def params(dtype=torch.float64):
    g = torch.Generator().manual_seed(4)
    return [torch.randn(s, generator=g, dtype=dtype).requires_grad_() for s in SHAPES]


@pytest.mark.parametrize("noise,antithetic", [("sign", False), ("sign", True), ("gauss", False)])
def test_noise_is_the_reference_noise(noise, antithetic):
    P = params()
    for k in range(4):
        got = functional.noise(P, 11, k, 0.01, noise, antithetic)
        want = eps_list(SHAPES, 11, k, 0.01, torch.float64, noise, antithetic)
        for a, b in zip(got, want):
            if noise == "sign":
                assert torch.equal(a, b)
            else:
                # docs/design.md: |z - exact| <= 4 * 2^-53 * max(r, 1), r <= 6.7; as much
                # again for the libm-based reference, and one rounding of sigma * z
                assert torch.allclose(a, b, rtol=2.0 ** -52, atol=0.01 * 8 * 2.0 ** -53 * 6.7)


def test_candidates_are_theta_plus_noise_and_detached():
    P = params()
    cands = functional.candidates(P, 5, 3, 0.1)
    assert len(cands) == 3
    for k, cand in enumerate(cands):
        eps = functional.noise(P, 5, k, 0.1)
        for c, p, e in zip(cand, P, eps):
            assert torch.equal(c, p.detach() + e) and not c.requires_grad


def test_candidates_refuse_a_bad_population():
    P = params()
    with pytest.raises(ValueError, match="population must be >= 1"):
        functional.candidates(P, 5, 0, 0.1)
    with pytest.raises(ValueError, match="even population"):
        functional.candidates(P, 5, 3, 0.1, antithetic=True)
    with pytest.raises(TypeError, match="population must be an int"):
        functional.candidates(P, 5, 2.0, 0.1)


def test_combine_is_the_softmax_weighted_sum_and_its_gradient():
    P = params()
    tau, K = 0.3, 3
    losses = torch.tensor([0.5, 0.2, 0.9], dtype=torch.float64, requires_grad=True)
    star = functional.combine(P, losses, tau, 8, 0.05)
    w = torch.softmax(-losses / tau, 0)
    cands = functional.candidates(P, 8, K, 0.05)
    want = [sum(w[k] * cands[k][i] for k in range(K)) for i in range(len(P))]
    for a, b in zip(star, want):
        assert torch.allclose(a, b, rtol=1e-14, atol=1e-15)
    g = [torch.randn(s, dtype=torch.float64) for s in SHAPES]
    got = torch.autograd.grad(star, losses, g)[0]
    expected = torch.autograd.grad(want, losses, g)[0]
    assert torch.allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_functional_route_gives_the_step_s_hypergradient():
    """The K-graph route of the module docstring and EvoGrad.step agree."""
    P = params()
    lam = torch.tensor([0.7], dtype=torch.float64, requires_grad=True)
    a = [torch.ones(s, dtype=torch.float64) for s in SHAPES]

    def train(Q):
        return lam[0] * sum(((q - x) ** 2).sum() for q, x in zip(Q, a))

    def val(Q):
        return sum((q ** 3).sum() for q in Q)

    seed, K, sigma, tau = 3, 4, 0.05, 0.5
    cands = functional.candidates(P, evograd.step_seed(seed, 0), K, sigma)
    losses = torch.stack([train(c) for c in cands])
    val(functional.combine(P, losses, tau, evograd.step_seed(seed, 0), sigma)).backward(inputs=[lam])
    want, lam.grad = lam.grad.clone(), None
    evograd.EvoGrad(P, [lam], population=K, sigma=sigma, temperature=tau, seed=seed,
                    buffers=[]).step(lambda: train(P), lambda: val(P))
    assert torch.allclose(lam.grad, want, rtol=1e-10, atol=0)
