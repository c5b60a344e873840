"""One LFT iteration: the model learns on a pseudo-seen episode with FT
active; the FT parameters are meta-learned so that this update helps on a
pseudo-unseen episode evaluated without FT (T1-T2 or EvoGrad). `none` trains
without FT, `ft-fixed` with FT at its initial values."""
import torch

import evograd
from evograd import baselines

try:  # PyTorch 2.x
    from torch.func import functional_call
except ImportError:  # PyTorch 1.13
    from torch.nn.utils.stateless import functional_call

METHODS = ("none", "ft-fixed", "t1t2", "evograd")


class LFTTrainer:
    def __init__(self, model, method, n_way, lr=1e-3, ft_lr=1e-3, population=2, sigma=None,
                 temperature=0.05, seed=0):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        self.model, self.method, self.n_way = model, method, n_way
        self.opt = torch.optim.Adam(model.model_parameters(), lr=lr)
        self.ft_opt = torch.optim.Adam(model.ft_parameters(), lr=ft_lr)
        model.set_ft(method != "none")
        self.episode_loss = EpisodeLoss(model, n_way)
        if method == "evograd":
            # Perturb the feature extractor and relation module, never the FT
            # layers; sigma defaults to the model learning rate (paper's code).
            self.meta = evograd.EvoGrad(model.model_parameters(), model.ft_parameters(),
                                        population=population, sigma=lr if sigma is None else sigma,
                                        temperature=temperature, seed=seed, module=model)

    @property
    def lr(self):
        return self.opt.param_groups[0]["lr"]

    def seen_loss(self, ep, forward=None):
        """Pseudo-seen episode, FT active, training mode."""
        self.model.train()
        self.model.set_ft(True)
        return self._loss(ep, forward)

    def unseen_loss(self, ep, forward=None):
        """Pseudo-unseen episode, FT inactive, evaluation mode."""
        self.model.eval()
        self.model.set_ft(False)
        try:
            return self._loss(ep, forward)
        finally:
            self.model.train()
            self.model.set_ft(True)

    def _loss(self, ep, forward):
        s, q, y = ep
        if forward is None:
            return self.model.loss(s, q, y, self.n_way)[0]
        return forward(s, q, y)

    def meta_update(self, seen, unseen):
        """The block LFT's official loop does with T1-T2."""
        self.ft_opt.zero_grad()
        if self.method == "evograd":
            # --- the EvoGrad swap ---
            val = self.meta.step(lambda: self.seen_loss(seen), lambda: self.unseen_loss(unseen)).val_loss
        else:
            params = self.model.model_parameters()
            ids = {id(p) for p in params}
            names = [n for n, p in self.model.named_parameters() if id(p) in ids]

            def fwd(Q):
                # Fast weights; FT parameters and throwaway copies of the
                # BatchNorm statistics come from the model.
                state = {"model." + n: p for n, p in zip(names, Q)}
                state.update({"model." + n: b.clone() for n, b in self.model.named_buffers()})
                return lambda s, q, y: functional_call(self.episode_loss, state, (s, q, y))
            val = baselines.t1t2_step(params, self.model.ft_parameters(),
                                      lambda Q: self.seen_loss(seen, fwd(Q)),
                                      lambda Q: self.unseen_loss(unseen, fwd(Q)), lr=self.lr).item()
        self.ft_opt.step()
        return val

    def iteration(self, seen, unseen):
        if self.method in ("t1t2", "evograd"):
            self.meta_update(seen, unseen)
        loss = self.seen_loss(seen) if self.method != "none" else self._plain(seen)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()

    def _plain(self, ep):
        self.model.train()
        self.model.set_ft(False)
        return self._loss(ep, None)


class EpisodeLoss(torch.nn.Module):
    """model.loss as a module call, so functional_call can swap its parameters."""

    def __init__(self, model, n_way):
        super().__init__()
        self.model, self.n_way = model, n_way

    def forward(self, s, q, y):
        return self.model.loss(s, q, y, self.n_way)[0]
