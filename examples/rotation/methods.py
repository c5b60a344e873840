"""One iteration of the rotation task: a model update on a training batch
rotated by the current lambda, then (for the meta-learning methods) one
meta-update of lambda, the rotation angle in degrees, on a validation batch
rotated by the true angle.

    baseline  lambda fixed at 0 (train on upright images)
    oracle    lambda fixed at the true angle
    evograd   lambda learned with EvoGrad (this plugin)
    t1t2      lambda learned with the one-step unrolled second-order
              hypergradient (inner lr = the model's lr)
"""
import math

import torch
from torch.nn import functional as F

import evograd
from evograd import baselines
from rotate import rotate

try:  # PyTorch 2.x
    from torch.func import functional_call
except ImportError:  # PyTorch 1.13
    from torch.nn.utils.stateless import functional_call

METHODS = ("baseline", "oracle", "evograd", "lookahead", "jvp", "t1t2")
LEARNED = ("evograd", "lookahead", "jvp", "t1t2")


def entropy(weights: torch.Tensor) -> float:
    """Shannon entropy (nats) of the softmax weights; log K when uniform, 0 winner-take-all."""
    w = weights.double().clamp_min(0)
    return float(-(w * torch.log(w.clamp_min(1e-300))).sum())


class RotationTrainer:
    def __init__(self, model, method, true_angle, lr=0.05, momentum=0.9, optimizer="sgd",
                 meta_lr=1.0, meta_betas=(0.9, 0.999), meta_eps=1e-8, meta_schedule="cosine",
                 iterations=None, init_angle=0.0,
                 population=2, sigma=1e-3, temperature=0.05, noise="sign", antithetic=False,
                 scale="t1t2", seed=0):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        self.model, self.method = model, method
        start = {"baseline": 0.0, "oracle": float(true_angle)}.get(method, float(init_angle))
        # lambda: one scalar, degrees.
        self.angle = torch.tensor(start, requires_grad=method in LEARNED)
        params = list(model.parameters())
        if optimizer == "sgd":
            self.opt = torch.optim.SGD(params, lr=lr, momentum=momentum)
        elif optimizer == "adam":
            self.opt = torch.optim.Adam(params, lr=lr)
        else:
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.lr = lr  # also T1-T2's inner lr and scale='t1t2''s inner_lr
        self.names = [n for n, _ in model.named_parameters()]
        self.log = {"angle": [start], "hypergradient": [], "val_loss": [], "train_loss": [],
                    "entropy": [], "loss_spread": [], "grad_l1": [], "grad_l2": []}
        if method in LEARNED:
            self.meta_opt = torch.optim.Adam([self.angle], lr=meta_lr, betas=meta_betas, eps=meta_eps)
            self.meta_sched = None
            if meta_schedule == "cosine":
                # Large steps while lambda travels, small ones at the end so
                # that a noisy hypergradient (EvoGrad's, K=2) settles.
                if not iterations:
                    raise ValueError("meta_schedule='cosine' needs the number of iterations")
                self.meta_sched = torch.optim.lr_scheduler.CosineAnnealingLR(
                    self.meta_opt, iterations, eta_min=0.0)
            elif meta_schedule != "constant":
                raise ValueError(f"meta_schedule must be 'cosine' or 'constant', got {meta_schedule!r}")
        if method == "evograd":
            self.meta = evograd.EvoGrad(model, [self.angle], population=population, sigma=sigma,
                                        temperature=temperature, noise=noise,
                                        antithetic=antithetic, seed=seed,
                                        scale=None if scale == "none" else scale,
                                        inner_lr=None if scale == "none" else lr)
        elif method in ("lookahead", "jvp"):
            self.meta = evograd.EvoGrad(model, [self.angle], estimator=method, inner_lr=lr,
                                        seed=seed)

    def train_loss(self, x, y, angle, forward=None):
        logits = (forward or self.model)(rotate(x, angle))
        return F.cross_entropy(logits, y)

    def _functional(self, Q):
        state = dict(zip(self.names, Q))
        return lambda inp: functional_call(self.model, state, (inp,))

    def meta_update(self, x, y, xv, yv):
        """One hypergradient of the validation loss w.r.t. lambda, one Adam step."""
        self.meta_opt.zero_grad()
        if self.method == "evograd":
            # --- the EvoGrad swap ---
            r = self.meta.step(lambda: self.train_loss(x, y, self.angle),
                               lambda: F.cross_entropy(self.model(xv), yv))
            val = r.val_loss
            finite = r.losses[torch.isfinite(r.losses)]
            self.log["entropy"].append(entropy(r.weights))
            self.log["loss_spread"].append(float(finite.max() - finite.min()))
        elif self.method in ("lookahead", "jvp"):
            val = self.meta.step(lambda: self.train_loss(x, y, self.angle),
                                 lambda: F.cross_entropy(self.model(xv), yv)).val_loss
        else:
            val = baselines.t1t2_step(
                list(self.model.parameters()), [self.angle],
                lambda Q: self.train_loss(x, y, self.angle, self._functional(Q)),
                lambda Q: F.cross_entropy(self._functional(Q)(xv), yv), lr=self.lr).item()
        self.log["hypergradient"].append(float(self.angle.grad))
        self.log["val_loss"].append(val)
        self.meta_opt.step()
        if self.meta_sched is not None:
            self.meta_sched.step()
        return val

    def iteration(self, x, y, xv, yv):
        """Model update at the current lambda, then the meta-update. Returns the training loss."""
        self.model.train()
        loss = self.train_loss(x, y, self.angle.detach())
        self.opt.zero_grad()
        loss.backward()
        with torch.no_grad():
            g = torch.cat([p.grad.flatten() for p in self.model.parameters()])
            self.log["grad_l1"].append(float(g.abs().sum()))
            self.log["grad_l2"].append(float(g.norm()))
        self.opt.step()
        if self.method in LEARNED:
            self.meta_update(x, y, xv, yv)
        self.log["train_loss"].append(loss.item())
        self.log["angle"].append(float(self.angle.detach()))
        return loss.item()
