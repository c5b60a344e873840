"""The 1-D problem of the EvoGrad paper (section 4.1).

    f_V(x) = (x - 0.5)^2                 validation loss
    f_T(x) = (x - 1)^2 + lam * x^2       training loss, minimised at x*(lam) = 1 / (1 + lam)

so the true hypergradient d f_V(x*(lam)) / d lam = (lam - 1) / (lam + 1)^3.
"""
import torch

import evograd


def true_hypergradient(lam):
    return (lam - 1.0) / (lam + 1.0) ** 3


def train_loss(x, lam):
    return (x - 1.0) ** 2 + lam * x ** 2


def val_loss(x):
    return (x - 0.5) ** 2


def evograd_estimate(x0: float, lam: float, population: int, sigma: float, temperature: float,
                     seed: int, noise: str = "gauss") -> float:
    """One EvoGrad hypergradient at (x0, lam) through the functional API."""
    x = torch.tensor([x0], dtype=torch.float64)
    lam_t = torch.tensor(lam, dtype=torch.float64, requires_grad=True)
    cands = evograd.functional.candidates([x], seed, population, sigma, noise)
    losses = torch.stack([train_loss(c[0], lam_t).sum() for c in cands])
    (star,) = evograd.functional.combine([x], losses, temperature, seed, sigma, noise)
    (g,) = torch.autograd.grad(val_loss(star).sum(), lam_t)
    return g.item()


def estimate_curve(lams, population, repetitions, sigma=1.0, temperature=0.5, seed=0,
                   progress=None):
    """Mean and std over `repetitions` random x ~ N(0, 1) of the estimate at each lam.
    Returns two lists; `progress` (optional) is called once per lam."""
    gen = torch.Generator().manual_seed(seed)
    means, stds = [], []
    for i, lam in enumerate(lams):
        xs = torch.randn(repetitions, generator=gen, dtype=torch.float64).tolist()
        vals = torch.tensor([evograd_estimate(x, lam, population, sigma, temperature,
                                              seed=seed * 1_000_003 + i * repetitions + r)
                             for r, x in enumerate(xs)])
        means.append(vals.mean().item())
        stds.append(vals.std().item())
        if progress:
            progress()
    return means, stds


def trajectory(x0, lam0, steps=5, lr=0.1, hypergradient="evograd", population=100, sigma=1.0,
               temperature=0.5, seed=0):
    """(x, lam) after each of `steps` SGD steps on x (training loss) and lam
    (EvoGrad via evograd.EvoGrad.step, or the true hypergradient)."""
    x = torch.tensor([x0], dtype=torch.float64, requires_grad=True)
    lam = torch.tensor([lam0], dtype=torch.float64, requires_grad=True)
    meta = evograd.EvoGrad([x], [lam], population=population, sigma=sigma,
                           temperature=temperature, noise="gauss", seed=seed, buffers=[])
    path = [(x0, lam0)]
    for _ in range(steps):
        if hypergradient == "evograd":
            meta.step(lambda: train_loss(x, lam).sum(), lambda: val_loss(x).sum())
            hg = lam.grad.clone()
            lam.grad = None
        else:
            hg = true_hypergradient(lam.detach())
        (gx,) = torch.autograd.grad(train_loss(x, lam.detach()).sum(), x)
        with torch.no_grad():
            x -= lr * gx
            lam -= lr * hg
        path.append((x.item(), lam.item()))
    return path
