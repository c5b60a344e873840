"""What the user's loss closures return, checked: a finite floating scalar
(or ``(loss, *aux)`` from the validation closure), and its gradient with
respect to lambda."""
import math
from typing import Any, Tuple

import torch


def split_aux(out) -> Tuple[Any, Any]:
    """A closure's result: a loss, or (loss, *aux) for logging (logits, say)."""
    if isinstance(out, (tuple, list)) and out:
        rest = tuple(out[1:])
        return out[0], (rest[0] if len(rest) == 1 else rest) if rest else None
    return out, None


def check_loss(loss, which: str, allow_nonfinite: bool = False) -> float:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"the {which} loss closure must return a tensor, got {type(loss).__name__}")
    if loss.numel() != 1:
        raise ValueError(f"the {which} loss must be a scalar, got shape {tuple(loss.shape)}")
    if not loss.is_floating_point():
        raise TypeError(f"the {which} loss must be floating point, got {loss.dtype}")
    value = float(loss.detach())
    if not math.isfinite(value) and not allow_nonfinite:
        raise not_finite(which, value)
    return value


def not_finite(which: str, value: float) -> ValueError:
    return ValueError(f"the {which} loss is not finite ({value}); "
                      "EvoGrad(..., nonfinite='drop') skips such candidates")


def hyper_gradient(loss: torch.Tensor, hyperparams, allow_unused: bool):
    """d loss / d lambda (the parameters do not require grad meanwhile);
    None for a hyperparameter it does not use, with allow_unused."""
    hint = "; EvoGrad(..., allow_unused=True) lets such hyperparameters get no gradient"
    if not loss.requires_grad:
        if allow_unused:
            return [None] * len(hyperparams)
        raise ValueError("the training loss does not depend on the hyperparameters" + hint)
    grads = torch.autograd.grad(loss.reshape(()), hyperparams, allow_unused=True)
    for j, g in enumerate(grads):
        if g is None and not allow_unused:
            raise ValueError(f"the training loss does not depend on hyperparameter {j}" + hint)
    return grads
