"""The estimators, by name: one unit each, and the one place a step
dispatches. options.def's EVOGRAD_ESTIMATOR rows say which options each one
uses; an option set to anything but its default for an estimator that does
not use it is an error at construction.

A unit is a function ``step(meta, setting, train_loss_fn, val_loss_fn, seed)
-> StepResult`` that leaves the model as it found it (``setting.snapshot()``
does that) and accumulates lambda's gradient. Adding one is its module, its
row in options.def and its line here.
"""
import contextlib
from dataclasses import dataclass
from typing import Any, Callable, List, Optional

import torch
from torch import nn

from . import jvp, lookahead, options, paper
from .snapshot import Snapshot

UNITS = {"evograd": paper.step, "lookahead": lookahead.step, "jvp": jvp.step}


@dataclass
class Setting:
    """What an estimator works on besides the options: the noise layout
    (which writes the parameters), the ranks' exchange, the buffers to put
    back, the tensors frozen for the step, and the model (None when only
    tensors were given)."""
    layout: Any
    exchange: Any
    buffers: List[torch.Tensor]
    bystanders: List[torch.Tensor]
    owner: Optional[nn.Module]
    no_sync: Callable[[], Any]

    @contextlib.contextmanager
    def snapshot(self):
        """The model as the step found it, put back however the block ends:
        values, .grad, requires_grad, buffers and the modules' training flags."""
        snap = Snapshot(self.layout, self.buffers, self.owner)
        try:
            snap.freeze(self.bystanders)
            with torch.enable_grad(), self.no_sync():
                yield snap
        finally:
            snap.restore()


def unit(name: str):
    return UNITS[name]


def check_registry():
    """The units here, the estimator row's choices and the EVOGRAD_ESTIMATOR
    rows name the same estimators (tests/python/test_options.py)."""
    choices = options.BY_NAME["estimator"].choices
    if set(UNITS) != set(choices) or set(options.USES) != set(choices):
        raise ImportError(f"evograd: estimators disagree: units {sorted(UNITS)}, options.def "
                          f"choices {sorted(choices)}, uses rows {sorted(options.USES)}")


check_registry()
