"""One MetaXL iteration: the RTN (lambda) meta-learned on half of the target
batch by T1-T2 or by EvoGrad (`evograd`: the paper's estimator; `jvp`:
T1-T2's hypergradient over the whole encoder, as the official step unrolls
it), then the encoder trained on source examples passed through the RTN plus
the other half of the target batch. `jt` (joint training) has no RTN and
trains on source + all target examples."""
import torch
from torch.nn import functional as F

import evograd
from evograd import baselines

try:  # PyTorch 2.x
    from torch.func import functional_call
except ImportError:  # PyTorch 1.13
    from torch.nn.utils.stateless import functional_call

METHODS = ("jt", "t1t2", "evograd", "jvp")


def token_loss(logits, tags, mask):
    return F.cross_entropy(logits[mask], tags[mask])


def join(src, tgt):
    """One batch of source and target sentences, and which rows are source."""
    tokens = torch.cat([src[0], tgt[0]])
    rows = torch.zeros(len(tokens), dtype=torch.bool, device=tokens.device)
    rows[: len(src[0])] = True
    return tokens, torch.cat([src[1], tgt[1]]), torch.cat([src[2], tgt[2]]), rows


class MetaXLTrainer:
    def __init__(self, model, rtn, method, lr=1e-3, rtn_lr=1e-3, perturb="head", population=2,
                 sigma=1e-3, temperature=0.05, common_random_numbers=True, seed=0):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
        if perturb not in ("head", "all"):
            raise ValueError(f"perturb must be 'head' or 'all', got {perturb!r}")
        self.model, self.rtn, self.method = model, rtn, method
        self.opt = torch.optim.Adam(model.parameters(), lr=lr)
        self.ropt = torch.optim.Adam(rtn.parameters(), lr=rtn_lr)
        self.names = [n for n, _ in model.named_parameters()]
        if method == "evograd":
            # The paper's code perturbs the classification head only.
            params = list(model.classifier.parameters()) if perturb == "head" else model
            self.meta = evograd.EvoGrad(params, rtn, population=population, sigma=sigma,
                                        temperature=temperature, seed=seed,
                                        common_random_numbers=common_random_numbers,
                                        module=model if perturb == "head" else None)
        elif method == "jvp":
            # the inner step reads the encoder optimiser's learning rate, as T1-T2's does
            self.meta = evograd.EvoGrad(model, rtn, estimator="jvp", inner_lr=self.opt)

    @property
    def lr(self):
        return self.opt.param_groups[0]["lr"]

    def train_loss(self, forward, src, tgt):
        """Source through the RTN plus target: MetaXL's training loss."""
        tokens, tags, mask, rows = join(src, tgt)
        return token_loss(forward(tokens, mask, self.rtn, rows), tags, mask)

    def meta_update(self, src, tgt_a, tgt_b):
        """The block MetaXL's official step does with T1-T2."""
        self.ropt.zero_grad()
        # The last update's gradients are spent: freed before the meta-step,
        # they do not sit beside its passes (a parameter-sized copy each).
        self.opt.zero_grad(set_to_none=True)
        if self.method in ("evograd", "jvp"):
            # --- the EvoGrad swap ---
            result = self.meta.step(lambda: self.train_loss(self.model, src, tgt_a),
                                    lambda: token_loss(self.model(tgt_b[0], tgt_b[2]), tgt_b[1], tgt_b[2]))
            val = result.val_loss
        else:
            def fwd(Q):
                return lambda *a: functional_call(self.model, dict(zip(self.names, Q)), a)
            val = baselines.t1t2_step(
                list(self.model.parameters()), list(self.rtn.parameters()),
                lambda Q: self.train_loss(fwd(Q), src, tgt_a),
                lambda Q: token_loss(fwd(Q)(tgt_b[0], tgt_b[2]), tgt_b[1], tgt_b[2]), lr=self.lr).item()
        self.ropt.step()
        return val

    def iteration(self, src, tgt):
        """src, tgt: (tokens, tags, mask) batches. Returns the training loss."""
        self.model.train()
        if self.method == "jt":
            tokens, tags, mask, _ = join(src, tgt)
            loss = token_loss(self.model(tokens, mask), tags, mask)
        else:
            half = len(tgt[0]) // 2
            tgt_a = tuple(t[:half] for t in tgt)
            tgt_b = tuple(t[half:] for t in tgt)
            self.meta_update(src, tgt_a, tgt_b)
            loss = self.train_loss(self.model, src, tgt_a)
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()
