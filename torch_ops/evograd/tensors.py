"""Which tensors a meta-step touches: lambda, the tensors it perturbs, the
buffers it restores and the bystanders it freezes."""
import itertools
import warnings
from typing import Iterable, List, Sequence, Union

import torch
from torch import nn

TensorsLike = Union[nn.Module, torch.Tensor, Iterable[torch.Tensor]]


def as_tensors(name: str, obj: TensorsLike) -> List[torch.Tensor]:
    if isinstance(obj, nn.Module):
        return list(obj.parameters())
    if isinstance(obj, torch.Tensor):
        return [obj]
    if obj is None:
        raise TypeError(f"{name} must be a module, a tensor or a list of tensors, got None")
    try:
        out = list(obj)
    except TypeError:
        raise TypeError(f"{name} must be a module, a tensor or a list of tensors, "
                        f"got {type(obj).__name__}") from None
    for i, t in enumerate(out):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(t).__name__}")
    return out


def hyper_tensors(obj: TensorsLike) -> List[torch.Tensor]:
    """lambda: a module's parameters and its floating buffers that require
    grad (MetaModule-style nets, like the official MWN VNet, keep their
    weights as such buffers), each once; or the tensors given."""
    if not isinstance(obj, nn.Module):
        return as_tensors("hyperparams", obj)
    out, seen = [], set()
    for t in itertools.chain(obj.parameters(),
                             (b for b in obj.buffers() if b.is_floating_point() and b.requires_grad)):
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    if not out:
        raise ValueError(f"no hyperparameters: {type(obj).__name__} has no parameters and no "
                         "floating buffers with requires_grad=True")
    return out


def module_tensors(module: nn.Module, hyperparams: Sequence[torch.Tensor]):
    """What a step perturbs and what it restores in ``module``.

    Perturbed: every floating tensor that requires grad, parameter or buffer
    (MetaModule-style models, as in the official MWN code, register their
    weights as buffers that require grad), each once, except the
    hyperparameters. Restored: the other buffers (BatchNorm statistics)."""
    skip = {id(h) for h in hyperparams}
    perturbed = []
    for t in itertools.chain(module.parameters(), module.buffers()):
        if id(t) in skip or not (t.is_floating_point() and t.requires_grad):
            continue
        skip.add(id(t))
        perturbed.append(t)
    restored = [b for b in module.buffers() if id(b) not in skip]
    return perturbed, restored


def _storage(t: torch.Tensor):
    """Where a tensor's storage lives: equal for views of one storage."""
    storage = t.untyped_storage() if hasattr(t, "untyped_storage") else t.storage()
    return t.device, storage.data_ptr()


def restored_buffers(buffers, params, hyperparams):
    """Buffers to restore, each once, less those that share storage with a
    perturbed tensor (restored as such) or a hyperparameter."""
    taken = {_storage(t) for t in itertools.chain(params, hyperparams) if t.numel()}
    kept, seen = [], set()
    for b in buffers:
        if id(b) in seen or (b.numel() and _storage(b) in taken):
            continue
        seen.add(id(b))
        kept.append(b)
    return kept


def bystanders(owner, params, hyperparams):
    """Tensors the closures may touch that are neither perturbed nor
    hyperparameters (an encoder below a perturbed head): frozen during the
    step, so that nothing is recorded for them."""
    if owner is None:
        return []
    taken = {id(t) for t in itertools.chain(params, hyperparams)}
    return [t for t in itertools.chain(owner.parameters(), owner.buffers())
            if id(t) not in taken and t.requires_grad and t.is_leaf]


def check_tensors(params, hyperparams):
    """Leaves to perturb; floating leaves that require grad as lambda."""
    if not params:
        raise ValueError("no parameters to perturb")
    if not hyperparams:
        raise ValueError("no hyperparameters")
    for i, p in enumerate(params):
        if not p.is_leaf:
            raise ValueError(f"parameter {i} is not a leaf tensor")
    for j, h in enumerate(hyperparams):
        if not h.is_floating_point():
            raise TypeError(f"hyperparameter {j} must be floating point, got {h.dtype}")
        if not (h.is_leaf and h.requires_grad):
            raise ValueError(f"hyperparameter {j} must be a leaf tensor that requires grad")


def perturbed(params, hyperparams, buffers, module):
    """(the tensors to perturb, the buffers restored unless buffers= says
    otherwise) for what EvoGrad was given."""
    if module is not None and not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if module is not None and buffers is not None:
        raise ValueError("pass module= (its buffers are restored) or buffers=, not both")
    if isinstance(params, nn.Module):
        if module is params:
            raise ValueError("module= is for a list of params; EvoGrad(model, hyperparams) "
                             "already restores the model's buffers")
        if module is not None:
            raise ValueError(
                f"params is a module ({type(params).__name__}) and module= is another "
                f"({type(module).__name__}): did you swap params and hyperparams? The "
                "order is EvoGrad(params, hyperparams, module=model): params are "
                "perturbed, hyperparams (lambda) receive the gradient")
        out, default_buffers = module_tensors(params, hyperparams)
        if not out:
            raise ValueError(f"{type(params).__name__} has no floating tensor that requires "
                             "grad to perturb (parameters, or buffers with requires_grad=True)"
                             + (" other than the hyperparameters" if hyperparams else ""))
    else:
        out = as_tensors("params", params)
        default_buffers = [] if module is None else list(module.buffers())
        if module is None and buffers is None:
            warnings.warn("EvoGrad(list of tensors, ...) restores no buffers: each step's "
                          "train-mode forwards would leave BatchNorm statistics changed. Pass "
                          "module=<the model> to restore its buffers, or buffers=[] if it has "
                          "none", UserWarning, stacklevel=4)
    return out, default_buffers
