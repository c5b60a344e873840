"""The inner learning rate alpha, as a number or read from the model's
optimiser at each step (so that any LR scheduler is followed)."""
import torch

from . import options


def checked(name: str, value) -> float:
    """A learning rate: a finite number >= 0 (a one-element tensor is read)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return options.number(name, value, "float", options.BY_NAME["inner_lr"].rule)


def of_optimizer(optimizer: torch.optim.Optimizer) -> float:
    """The one learning rate of an optimiser's param groups (what a scheduler sets)."""
    lrs = {float(g["lr"]) for g in optimizer.param_groups}
    if len(lrs) != 1:
        raise ValueError(f"inner_lr: the optimiser's param groups have different learning rates "
                         f"{sorted(lrs)}; pass step(..., inner_lr=<the rate that applies>)")
    return checked("the optimiser's lr", lrs.pop())


def source(value, needed_by):
    """Where the inner learning rate comes from: a number, the model's
    optimiser, or None where nothing (``needed_by``) uses it."""
    if needed_by is None:
        if value is not None:
            raise ValueError("inner_lr is used only with scale='t1t2' or a T1-T2 estimator "
                             "('lookahead', 'jvp')")
        return None
    if value is None:
        raise ValueError(f"{needed_by} needs inner_lr, the model's learning rate (a number, or "
                         "the model's optimiser)")
    if isinstance(value, torch.optim.Optimizer):
        of_optimizer(value)
        return value
    return checked("inner_lr", value)
