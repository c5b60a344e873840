"""Forward-mode tangents on a model's own tensors.

The "jvp" estimator needs grad_lambda (u . grad_theta l_T(theta, lambda)):
the training loss's directional derivative along u, as a function of lambda,
differentiated once more. Forward mode gives the directional derivative
(the loss's tangent) and reverse mode its lambda-gradient. A value the
closure detaches (``.detach()``, ``.data``) carries no tangent, exactly as
double backward treats it as a constant: the official closures keep their
meaning unchanged. ``along`` puts u on the model for one pass;
second_order.py makes the pass differentiable once more.
"""
import contextlib
import warnings
from typing import Dict, Sequence

import torch
from torch import nn
from torch.autograd import forward_ad


@contextlib.contextmanager
def along(owner: nn.Module, params: Sequence[torch.Tensor], directions: Sequence[torch.Tensor]):
    """Inside a ``forward_ad.dual_level()``: every attribute of ``owner``'s
    modules that holds one of ``params`` (as a parameter or a buffer, tied
    ones included) holds it with ``directions[i]`` as its tangent until the
    block ends. The module's tensors themselves are not written, so that
    graphs recorded before keep their version counters."""
    index: Dict[int, int] = {id(p): i for i, p in enumerate(params)}
    swapped, found, refreshed = [], [False] * len(params), []
    try:
        for module in owner.modules():
            for table in (module._parameters, module._buffers):
                for name, t in list(table.items()):
                    i = index.get(id(t)) if t is not None else None
                    if i is None:
                        continue
                    dual = _make_dual(t.detach(), directions[i])
                    # Python attributes on the tensor (the official LFT
                    # code's `weight.fast`) are read through the attribute
                    dual.__dict__.update(t.__dict__)
                    table[name] = dual
                    swapped.append((table, name, t))
                    found[i] = True
                    if hasattr(module, "_flat_weights_names") and module not in refreshed:
                        refreshed.append(module)  # RNNs keep a list of their weights
        for module in refreshed:
            _refresh_flat_weights(module)
        missing = [i for i, f in enumerate(found) if not f]
        if missing:
            raise ValueError(f"estimator='jvp': parameter {missing[0]} is not an attribute of any "
                             "module of the model, so no tangent can be put on it; pass the "
                             "model (or module=) that holds every perturbed tensor")
        yield
    finally:
        for table, name, t in reversed(swapped):
            table[name] = t
        for module in refreshed:
            _refresh_flat_weights(module)


def _refresh_flat_weights(rnn: nn.Module):
    # What RNNBase._init_flat_weights does on torch 2; torch 1.13 has no such method
    rnn._flat_weights = [getattr(rnn, name, None) for name in rnn._flat_weights_names]


def _make_dual(primal, tangent_):
    # torch's first make_dual loads its forward-mode decompositions, which
    # call torch.jit.script: a DeprecationWarning of torch's, not the caller's.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script", category=DeprecationWarning)
        return forward_ad.make_dual(primal, tangent_)


def tangent(t: torch.Tensor):
    """The tangent ``t`` carries at the current level (None without one)."""
    return forward_ad.unpack_dual(t).tangent
