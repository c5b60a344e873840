"""The evograd operators with argument checking and documentation.

Each function is a thin call of ``torch.ops.evograd.<name>``; the same ops are
usable directly from TorchScript and C++. Noise is ``eps_k[i] = sigma *
z(seed, k, i)`` with ``z`` a pure function of its arguments (Philox4x32-10):
``"sign"`` gives +-1, ``"gauss"`` N(0, 1); with ``antithetic=True`` candidate
``2j+1`` uses exactly ``-z`` of candidate ``2j``. Element ``i`` counts across
the list in order, so splitting a list differently never changes the noise.
"""
import warnings
from typing import List, Sequence

import torch

from . import _library  # noqa: F401  (registers torch.ops.evograd)
from . import _transforms

_ops = torch.ops.evograd


def _warn_if_tracing(op: str):
    # torch.jit.trace records Python ints as constants: the traced code would
    # replay this call's seed and candidate on every later call.
    if torch.jit.is_tracing():
        warnings.warn(f"evograd.{op}: torch.jit.trace records seed, k and population as "
                      "constants, so the traced code reuses this call's noise on every call; "
                      "use torch.jit.script for code whose seed or candidate changes",
                      torch.jit.TracerWarning, stacklevel=3)


# The operators check every argument (the same checks for TorchScript and C++
# callers); these wrappers add only what Python tells better: a TypeError
# that names the argument where the dispatcher would say "expected int", and
# an empty list, which the dispatcher cannot route to any device.
def _tensor_list(name, tensors) -> List[torch.Tensor]:
    if isinstance(tensors, torch.Tensor):
        raise TypeError(f"{name} must be a list of tensors, not a single tensor")
    try:
        out = list(tensors)
    except TypeError:
        raise TypeError(f"{name} must be a list of tensors, got {type(tensors).__name__}") from None
    if not out:
        raise ValueError(f"{name} is an empty list")
    for i, t in enumerate(out):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}[{i}] must be a tensor, got {type(t).__name__}")
    return out


def _int(name, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    return value


def _float(name, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    return float(value)


def _noise(noise) -> str:
    if not isinstance(noise, str):
        raise TypeError(f"noise must be 'sign' or 'gauss', got {type(noise).__name__}")
    return noise


def perturb(params: Sequence[torch.Tensor], seed: int, k: int, sigma: float,
            noise: str = "sign", antithetic: bool = False, offset: int = 0) -> List[torch.Tensor]:
    """Candidate ``k``: new tensors ``params + eps_k`` (gradient to params: identity).

    ``offset`` (every list op has it): the global index of the list's first
    element. 0 for a whole parameter list; a process holding only a shard of
    a longer list passes where its shard starts and gets exactly that part of
    the whole list's noise.
    """
    args = (_int("seed", seed), _int("k", k), _float("sigma", sigma), _noise(noise),
            bool(antithetic), _int("offset", offset))
    params = _tensor_list("params", params)
    _warn_if_tracing("perturb")
    if _transforms.transforms_active():
        return list(_transforms.Perturb.apply(*args, *params))
    return _ops.perturb(params, *args)


def perturb_into(params: Sequence[torch.Tensor], out: Sequence[torch.Tensor], seed: int,
                 k: int, sigma: float, noise: str = "sign", antithetic: bool = False,
                 offset: int = 0) -> None:
    """Writes ``params + eps_k`` into ``out`` (may be ``params`` itself). Use under no_grad."""
    _warn_if_tracing("perturb_into")
    _ops.perturb_into(_tensor_list("params", params), _tensor_list("out", out),
                      _int("seed", seed), _int("k", k), _float("sigma", sigma), _noise(noise),
                      bool(antithetic), _int("offset", offset))


def combine(params: Sequence[torch.Tensor], losses: torch.Tensor, temperature: float,
            seed: int, sigma: float, noise: str = "sign",
            antithetic: bool = False, offset: int = 0) -> List[torch.Tensor]:
    """``theta* = params + sum_k w_k eps_k`` with ``w = softmax(-losses / temperature)``.

    Differentiable with respect to ``losses`` (through regenerated noise) and
    ``params`` (identity). ``len(losses)`` is the population K.
    """
    if not isinstance(losses, torch.Tensor):
        raise TypeError("losses must be a 1-D tensor")
    args = (_float("temperature", temperature), _int("seed", seed), _float("sigma", sigma),
            _noise(noise), bool(antithetic), _int("offset", offset))
    params = _tensor_list("params", params)
    _warn_if_tracing("combine")
    if _transforms.transforms_active():
        return list(_transforms.Combine.apply(losses, *args, *params))
    return _ops.combine(params, losses, *args)


def combine_into(params: Sequence[torch.Tensor], losses: torch.Tensor,
                 out: Sequence[torch.Tensor], temperature: float, seed: int, sigma: float,
                 noise: str = "sign", antithetic: bool = False, offset: int = 0) -> None:
    """Writes ``theta*`` into ``out`` (may be ``params``). Not differentiable; use under no_grad."""
    if not isinstance(losses, torch.Tensor):
        raise TypeError("losses must be a 1-D tensor")
    _warn_if_tracing("combine_into")
    _ops.combine_into(_tensor_list("params", params), losses, _tensor_list("out", out),
                      _float("temperature", temperature), _int("seed", seed),
                      _float("sigma", sigma), _noise(noise), bool(antithetic),
                      _int("offset", offset))


def weights(losses: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(-losses / temperature)``, stable for any spread of losses; differentiable."""
    if not isinstance(losses, torch.Tensor):
        raise TypeError("losses must be a 1-D tensor")
    temperature = _float("temperature", temperature)
    if _transforms.transforms_active():
        return _transforms.Weights.apply(losses, temperature)
    return _ops.weights(losses, temperature)


def project(grads: Sequence[torch.Tensor], seed: int, population: int, sigma: float,
            noise: str = "sign", antithetic: bool = False, offset: int = 0) -> torch.Tensor:
    """``c_k = <grads, eps_k>`` for k < population, in one pass, summed in float64.

    The reduction order is fixed, so results are bit-identical for any thread
    count. Returned in the grads' dtype (float32 for float16/bfloat16 grads).
    """
    _warn_if_tracing("project")
    return _ops.project(_tensor_list("grads", grads), _int("seed", seed),
                        _int("population", population), _float("sigma", sigma),
                        _noise(noise), bool(antithetic), _int("offset", offset))


def loss_cotangent(losses: torch.Tensor, projections: torch.Tensor,
                   temperature: float) -> torch.Tensor:
    """``dL/dl_j = -(w_j / tau) (c_j - sum_k w_k c_k)``: the gradient reaching each candidate loss."""
    if not isinstance(losses, torch.Tensor) or not isinstance(projections, torch.Tensor):
        raise TypeError("losses and projections must be 1-D tensors")
    return _ops.loss_cotangent(losses, projections, _float("temperature", temperature))


def check_perturbable(params: Sequence[torch.Tensor],
                      hyperparams: Sequence[torch.Tensor] = ()) -> None:
    """Raises unless ``params`` can be written in place by ``perturb_into`` and
    ``combine_into``: floating dtypes and one device shared by all, and no
    memory shared between two of them or with a hyperparameter."""
    _ops.check_perturbable(_tensor_list("params", params), list(hyperparams))
