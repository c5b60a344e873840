"""The write path of a meta-step: where each perturbed tensor's elements sit
in the noise's index space, and the list operators run over them.

The noise of element i is a pure function of (seed, k, i), where i counts
across the whole parameter list. A ``NoiseLayout`` holds the tensors the
step writes (``views``), the global index of each one's first element
(``starts``), and runs ``perturb_into``, ``combine_into`` and ``project``
over runs of views whose global ranges abut (one call for a list of whole
tensors). It also answers, for the step, what a model's storage changes:
whether every rank takes every backward, which exchange fits, what to check
before a step, which tensors are replicas, how the validation gradient is
taken. A model of whole tensors (any module or tensor list) uses this class;
FSDP2's row shards use ``shards.ShardedLayout``, which answers differently.
"""
import contextlib
from typing import List, Sequence, Tuple

import torch

from . import ops, tensors


class NoiseLayout:
    """Whole tensors: ``owners`` (what the caller passed; they require grad
    and hold ``.grad``) are the ``views`` the kernels write."""

    sharded = False

    def __init__(self, owners: Sequence[torch.Tensor]):
        self.owners = list(owners)
        self.views, self.starts = self._place()
        self.runs = self._runs()

    def _place(self) -> Tuple[List[torch.Tensor], List[int]]:
        starts, base = [], 0
        for p in self.owners:
            starts.append(base)
            base += p.numel()
        return self.owners, starts

    def _runs(self) -> List[Tuple[int, int, int]]:
        """(first, end, offset): consecutive non-empty views whose global
        ranges abut, each run one call of a list operator."""
        runs = []
        for i, v in enumerate(self.views):
            if v.numel() == 0:
                continue
            if runs and runs[-1][1] == i and \
                    self.starts[i - 1] + self.views[i - 1].numel() == self.starts[i]:
                runs[-1] = (runs[-1][0], i + 1, runs[-1][2])
            else:
                runs.append((i, i + 1, self.starts[i]))
        return runs

    def extents(self) -> List[Tuple[int, int]]:
        """(start, count) of each view: what the ranks compare at construction."""
        return [(s, v.numel()) for s, v in zip(self.starts, self.views)]

    # ---- the list operators over the runs ----------------------------------

    # ``targets``: the views to write, as the step hands them (aliases that
    # leave the views' autograd version counters alone).
    def perturb_into(self, saved, targets, seed, k, sigma, noise, antithetic):
        for a, b, offset in self.runs:
            ops.perturb_into(saved[a:b], targets[a:b], seed, k, sigma, noise, antithetic,
                             offset)

    def combine_into(self, saved, targets, losses, temperature, seed, sigma, noise, antithetic):
        for a, b, offset in self.runs:
            ops.combine_into(saved[a:b], losses, targets[a:b], temperature, seed, sigma,
                             noise, antithetic, offset)

    def project(self, grads, seed, population, sigma, noise, antithetic) -> torch.Tensor:
        """c_k over this process's elements."""
        return ops.project(grads, seed, population, sigma, noise, antithetic)

    # ---- what the storage changes for the step -----------------------------

    @property
    def lockstep(self) -> bool:
        """Whether every rank must take every backward, even one of a loss
        that is not finite here (then errors wait for the exchange)."""
        return False

    def exchange(self, plain):
        """The exchange over this layout, once every rank is known to be built alike."""
        return plain

    def before_step(self):
        """Checks made before each step (none for whole tensors)."""

    def reshard(self):
        """Puts the storage back after a forward (nothing to do for whole tensors)."""

    def replicas(self) -> List[torch.Tensor]:
        """The perturbed tensors that every rank holds whole."""
        return self.owners

    def bystanders(self, owner, hyperparams) -> List[torch.Tensor]:
        """The owner's tensors a step freezes (``tensors.bystanders``)."""
        return tensors.bystanders(owner, self.owners, hyperparams)

    def as_grad(self, i: int, local: torch.Tensor) -> torch.Tensor:
        """A gradient of view i as ``.grad`` of parameter i."""
        return local

    @contextlib.contextmanager
    def whole(self, owner, directions: Sequence[torch.Tensor]):
        """The tensors the model's modules hold whole during a pass, and
        ``directions`` for them (here: the parameters themselves)."""
        yield self.owners, directions

    def gradient(self, val: torch.Tensor, hyperparams):
        """d val / d (views, lambda): one autograd.grad (zeros for an unused view)."""
        grads = torch.autograd.grad(val.reshape(()), self.owners + list(hyperparams),
                                    allow_unused=True)
        n = len(self.owners)
        return ([g if g is not None else torch.zeros_like(p)
                 for g, p in zip(grads[:n], self.owners)], list(grads[n:]))


def for_parameters(owners: Sequence[torch.Tensor], world=None, module=None) -> NoiseLayout:
    """The layout of ``owners``: whole tensors, or FSDP2 row shards over
    ``world`` ranks (``module``: the model built with fully_shard)."""
    from . import shards
    kinds = [shards.is_sharded(p) for p in owners]
    if any(kinds):
        return shards.ShardedLayout(owners, kinds, world, module)
    return NoiseLayout(owners)
