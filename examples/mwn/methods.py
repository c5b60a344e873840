"""One Meta-Weight-Net training iteration, with the meta-update done by
T1-T2, by EvoGrad (this plugin), by the paper's plain EvoGrad, or not at all.

The structure follows the official MWN loop: (1) meta-update the weighting
network on a clean meta batch, (2) update the classifier on the noisy batch
with the per-sample weights the weighting network now gives."""
import torch
from torch.nn import functional as F

import evograd
from evograd import baselines

try:  # PyTorch 2.x
    from torch.func import functional_call
except ImportError:  # PyTorch 1.13
    from torch.nn.utils.stateless import functional_call

def fast_forward(model, Q, x):
    """model(x) with its parameters replaced by Q (in named_parameters order);
    BatchNorm statistics go to throwaway copies, as the official code's
    separate meta model does."""
    state = dict(zip((n for n, _ in model.named_parameters()), Q))
    state.update({n: b.clone() for n, b in model.named_buffers()})
    return functional_call(model, state, (x,))


METHODS = ("baseline", "t1t2", "evograd", "lookahead", "jvp", "evograd-reference")
# What V sees in the meta-step's training loss (see MWNTrainer):
VNET_INPUTS = ("own", "fixed", "through")


def weigh(cost, v, normalise):
    """The meta-step's weighted training loss from per-sample costs and V's
    weights: 'mean', sum(cost * v) / n (MW-Net's current code), or 'sum',
    sum(cost * v / sum(v)) (its first release, and the EvoGrad paper's MWN
    code: the weights compete, so the hypergradient raises V where the cost
    is below the weighted mean and lowers it above)."""
    if normalise == "sum":
        total = v.sum()
        return (cost * (v / total if float(total.detach()) != 0 else v)).sum()
    return (cost * v).sum() / len(cost)


def weighted_loss(logits, targets, vnet, normalise="mean"):
    """MWN's meta training loss: per-sample cost weighted by V(cost); V sees
    the cost detached at the current weights, as in the official code
    (evograd.detached: a plain detach, except inside a lookahead step's
    perturbed evaluations, where it is the value at the current weights)."""
    cost = F.cross_entropy(logits, targets, reduction="none").reshape(-1, 1)
    return weigh(cost, vnet(evograd.detached(cost)), normalise)


class MWNTrainer:
    def __init__(self, model, vnet, method, lr=0.1, momentum=0.9, weight_decay=5e-4,
                 vnet_lr=1e-3, vnet_weight_decay=1e-4, vnet_optimizer="adam", population=2, sigma=1e-3,
                 temperature=0.05, noise="sign", seed=0, scale="t1t2",
                 seed_schedule="mixed", vnet_input="own", meta_weights="mean", parallel=None,
                 one_step=False):
        """vnet_input, what the weighting net is fed in the meta-step's training loss:
        'own' (the official code, and the default): the losses at the parameters
        being evaluated, detached; T1-T2 then differentiates only the cost
        factor, while each EvoGrad candidate's V sees that candidate's own
        losses, so EvoGrad's finite difference also goes through V's input.
        'fixed': the current parameters' losses, as constants: the same as
        'own' for T1-T2, and for EvoGrad the part T1-T2's detach leaves.
        'through': not detached: T1-T2 also differentiates through V's input
        (what EvoGrad's 'own' estimates).
        vnet_optimizer: 'adam' (official MW-Net) or 'sgd' with momentum 0.9
        and Nesterov (the EvoGrad paper's MWN code).
        meta_weights: how the meta-step's training loss weighs the costs
        ('mean' or 'sum', see weigh).
        parallel="data": `model` is a DistributedDataParallel module and each
        rank passes its share of every batch; EvoGrad's meta-step averages over
        ranks (evograd.EvoGrad's parallel="data").
        one_step (jvp, lookahead): one training pass per iteration instead of
        two. The meta-step's inner pass already computes the classifier's
        gradient of the weighted loss on this batch; keep_train_grad leaves
        it in .grad and the classifier's optimiser steps on it, skipping the
        iteration's own forward and backward. The update then weighs the
        batch with V from before this iteration's meta-update (a one-step
        delay). Needs meta_weights='sum', where the meta-step's training
        loss is the update's loss (V normalised by its sum)."""
        if meta_weights not in ("mean", "sum"):
            raise ValueError(f"unknown meta_weights {meta_weights!r}; choose 'mean' or 'sum'")
        self.meta_weights = meta_weights
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        if parallel is not None and method not in ("evograd", "baseline", "jvp", "lookahead"):
            raise ValueError(f"{method} does not run data-parallel here: T1-T2 would need a double "
                             "backward through DDP's gradient all-reduce (examples/mwn/ranks.py "
                             "has the exact T1-T2 on several ranks)")
        if one_step and method not in ("jvp", "lookahead"):
            raise ValueError(f"one_step needs the inner gradient of a T1-T2 estimator: method "
                             f"'jvp' or 'lookahead', not {method!r}")
        if one_step and meta_weights != "sum":
            raise ValueError("one_step updates the classifier on the meta-step's training loss, "
                             "which is the update's loss only with meta_weights='sum' (V "
                             "normalised by its sum); 'mean' would scale it by sum(V)/n")
        self.one_step = one_step
        if vnet_input not in VNET_INPUTS:
            raise ValueError(f"unknown vnet_input {vnet_input!r}; choose from {VNET_INPUTS}")
        self.vnet_input = vnet_input
        self.model, self.vnet, self.method = model, vnet, method
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                                   weight_decay=weight_decay)
        if vnet_optimizer == "adam":
            self.vopt = torch.optim.Adam(vnet.parameters(), lr=vnet_lr, weight_decay=vnet_weight_decay)
        elif vnet_optimizer == "sgd":
            self.vopt = torch.optim.SGD(vnet.parameters(), lr=vnet_lr, momentum=0.9, nesterov=True,
                                        weight_decay=vnet_weight_decay)
        else:
            raise ValueError(f"unknown vnet_optimizer {vnet_optimizer!r}; choose 'adam' or 'sgd'")
        self.vnet_weight_decay = vnet_weight_decay
        self.grad_to_decay = []  # |lambda-gradient| / |weight-decay term|, per meta-update
        self.population, self.sigma, self.temperature = population, sigma, temperature
        self.generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        self.last = None
        if method == "evograd":
            # scale="t1t2": the official meta-optimiser settings (Adam 1e-3,
            # weight decay 1e-4) were tuned for T1-T2's hypergradient, which
            # EvoGrad's own is ~sigma^2/(2 tau lr) = 1e-4 times smaller than.
            self.meta = evograd.EvoGrad(model, vnet, population=population, sigma=sigma,
                                        temperature=temperature, noise=noise, seed=seed,
                                        scale=None if scale == "none" else scale,
                                        inner_lr=None if scale == "none" else lr,
                                        seed_schedule=seed_schedule, parallel=parallel)
        elif method == "lookahead":
            # T1-T2's hypergradient by a finite difference (no noise, T1-T2's
            # scale): the official meta-optimiser settings apply as they are;
            # the inner learning rate follows the model optimiser's schedule.
            self.meta = evograd.EvoGrad(model, vnet, estimator="lookahead", inner_lr=self.opt,
                                        seed=seed, parallel=parallel, keep_train_grad=one_step)
        elif method == "jvp":
            # T1-T2's hypergradient exactly (forward mode), same settings
            self.meta = evograd.EvoGrad(model, vnet, estimator="jvp", inner_lr=self.opt, seed=seed,
                                        parallel=parallel, keep_train_grad=one_step)

    @property
    def lr(self):
        return self.opt.param_groups[0]["lr"]

    def _functional(self, Q, x):
        return fast_forward(self.model, Q, x)

    def _train_loss(self, logits, y, cost0):
        """The meta-step's weighted training loss, V fed as vnet_input says."""
        if self.vnet_input == "own":
            return weighted_loss(logits, y, self.vnet, self.meta_weights)
        cost = F.cross_entropy(logits, y, reduction="none").reshape(-1, 1)
        v = self.vnet(cost0 if self.vnet_input == "fixed" else cost)
        return weigh(cost, v, self.meta_weights)

    def meta_update(self, x, y, xm, ym):
        """The block MWN's official script does with T1-T2. Returns the meta loss."""
        vparams = list(self.vnet.parameters())
        self.vopt.zero_grad()
        cost0 = None
        if self.vnet_input == "fixed":
            with torch.no_grad():
                cost0 = F.cross_entropy(self.model(x), y, reduction="none").reshape(-1, 1)
        if self.method in ("evograd", "lookahead", "jvp"):
            seen = []

            def train():
                logits = self.model(x)
                if not seen:  # the first pass is at the current weights (one_step logs it)
                    seen.append(logits.detach())
                return self._train_loss(logits, y, cost0)
            if self.one_step:
                self.opt.zero_grad()  # the step accumulates the classifier's gradient here
            # --- the EvoGrad swap: one call instead of the T1-T2 block ---
            result = self.meta.step(train, lambda: F.cross_entropy(self.model(xm), ym))
            val = result.val_loss
            if self.one_step:
                with torch.no_grad():
                    cost = F.cross_entropy(seen[0], y, reduction="none")
                    v = self.vnet(cost.reshape(-1, 1)).flatten()
                self.last = dict(cost=cost, v=v, predicted=seen[0].argmax(1))
                self.one_step_loss = float(result.losses[0])
        else:
            params = list(self.model.parameters())
            train_fn = lambda Q: self._train_loss(self._functional(Q, x), y, cost0)
            val_fn = lambda Q: F.cross_entropy(self._functional(Q, xm), ym)
            if self.method == "t1t2":
                val = baselines.t1t2_step(params, vparams, train_fn, val_fn, lr=self.lr).item()
            else:
                val = baselines.reference_evograd_step(
                    params, vparams, train_fn, val_fn, self.population, self.sigma,
                    self.temperature, generator=self.generator).item()
        if self.vnet_weight_decay:
            with torch.no_grad():
                g = torch.cat([p.grad.flatten() for p in vparams]).norm()
                d = self.vnet_weight_decay * torch.cat([p.flatten() for p in vparams]).norm()
                self.grad_to_decay.append((g / d).item())
        self.vopt.step()
        return val

    def iteration(self, x, y, xm, ym):
        """One full iteration; returns the training loss of the classifier update."""
        self.model.train()
        meta_loss = None
        if self.method != "baseline":
            meta_loss = self.meta_update(x, y, xm, ym)
        if self.one_step:  # .grad holds the update's gradient already (see __init__)
            self.opt.step()
            return self.one_step_loss, meta_loss
        logits = self.model(x)
        cost = F.cross_entropy(logits, y, reduction="none")
        if self.method == "baseline":
            loss = cost.mean()
            v = None
        else:
            with torch.no_grad():
                v = self.vnet(cost.detach().reshape(-1, 1)).flatten()
                w = v / v.sum() if v.sum() > 0 else v
            loss = (cost * w).sum()
        # What this update saw, for logging: per-sample losses, V(loss) before
        # normalisation (None for the baseline), predicted classes.
        self.last = dict(cost=cost.detach(), v=v, predicted=logits.detach().argmax(1))
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item(), meta_loss
