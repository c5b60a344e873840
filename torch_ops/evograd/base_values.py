"""``evograd.detached(t)``: T1-T2's ``detach`` for closures the step evaluates
away from the base parameters.

T1-T2 differentiates the training loss at theta; what the official code
detaches there (MWN feeds its weighting net the per-example cost
``cost.detach()``) is a value *at theta*. An estimator that evaluates the
training closure at perturbed parameters theta + d sees ``cost(theta +
d).detach()`` instead, and so estimates another objective, one whose
weighting net's input moves with theta. Writing ``evograd.detached(cost)``
keeps the official meaning: during a step that first evaluates the closure at
theta (the "lookahead" estimator), each call returns the value its
counterpart had there, in call order; everywhere else it is ``t.detach()``.
"""
import threading

import torch

_active = threading.local()


def detached(t: torch.Tensor) -> torch.Tensor:
    """``t.detach()``, or inside a lookahead step's perturbed evaluations the
    value ``t`` had at the base parameters (the same call, in order)."""
    values = getattr(_active, "values", None)
    return t.detach() if values is None else values.take(t)


class BaseValues:
    """Records the values at theta on the first pass, replays them after."""

    def __init__(self):
        self.values, self.replaying, self.next = [], False, 0

    def take(self, t: torch.Tensor) -> torch.Tensor:
        if not self.replaying:
            self.values.append(t.detach())
            return self.values[-1]
        if self.next >= len(self.values):
            raise RuntimeError("evograd.detached was called more times in a perturbed evaluation "
                               f"of the training closure than at the base parameters "
                               f"({len(self.values)}): the closure must make the same calls")
        value = self.values[self.next]
        self.next += 1
        if value.shape != t.shape:
            raise RuntimeError(f"evograd.detached: call {self.next - 1} had shape "
                               f"{tuple(value.shape)} at the base parameters and "
                               f"{tuple(t.shape)} now")
        return value

    def replay(self):
        self.replaying, self.next = True, 0

    def __enter__(self):
        _active.values = self
        return self

    def __exit__(self, *exc):
        _active.values = None
        return False

