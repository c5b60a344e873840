"""What precision a closure computes in, seen from its results.

Under ``torch.autocast`` the parameters stay float32 while matmuls and
convolutions return bfloat16 or float16: the step cannot tell from its own
tensors, and the closures usually enter autocast themselves. ``Watch`` is a
function mode that notes the narrowest floating dtype any torch function
returns while it is active; it changes nothing it sees.

``WithoutAutocast`` is the step's ``autocast=False``: each torch function
runs with autocast disabled, so that the closures' own ``torch.autocast``
blocks change nothing inside the step.

What depends on ``Watch``: "lookahead" divides a gradient difference by 2s
(s ~ sqrt(eps_float32) |theta|), which half precision's rounding swamps,
so it refuses to run; the paper's estimator warns when its candidates' loss
differences are within the rounding (the weights then come from rounding).
"""
import contextlib
import warnings
from typing import Optional

import torch
from torch.overrides import TorchFunctionMode

# Unit roundoff (half an ulp at 1) of the narrower floating types.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0 ** -9, torch.float16: 2.0 ** -12}


class Watch(TorchFunctionMode):
    """Inside the block, ``narrowest`` is the narrowest floating dtype among
    the results of the torch functions called (None: nothing narrower than
    float32)."""

    def __init__(self):
        super().__init__()
        self.narrowest: Optional[torch.dtype] = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if self.narrowest != torch.bfloat16:  # nothing coarser to find
            self._note(out)
        return out

    def _note(self, out):
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.dtype in UNIT_ROUNDOFF:
                # bfloat16 has the coarser rounding of the two
                if self.narrowest is None or t.dtype == torch.bfloat16:
                    self.narrowest = t.dtype


class WithoutAutocast(TorchFunctionMode):
    """Inside the block every torch function runs with autocast off on the
    devices that have it, even inside a ``torch.autocast`` the closure
    enters (a mode sees each call before the dispatcher casts)."""

    def __init__(self):
        super().__init__()
        self.devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])

    def __torch_function__(self, func, types, args=(), kwargs=None):
        with contextlib.ExitStack() as off:
            for device in self.devices:
                off.enter_context(torch.autocast(device, enabled=False))
            return func(*args, **(kwargs or {}))


def warn_once(meta, key: str, message: str) -> None:
    """A RuntimeWarning the first time ``key`` comes up for this EvoGrad.
    (Python's own once-per-place filter forgets whenever any code changes
    the filters, as torch's forward mode does on every step.)"""
    said = meta.__dict__.setdefault("_said", set())
    if key not in said:
        said.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=5)


def name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")
