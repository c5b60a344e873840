"""What a meta-step returns, whichever estimator took it."""
from dataclasses import dataclass
from typing import Any, Optional

import torch


@dataclass
class StepResult:
    val_loss: float           # validation loss at theta*
    losses: torch.Tensor      # [K] candidate training losses (float64, CPU; dropped ones NaN/inf)
    weights: torch.Tensor     # [K] softmax(-losses / temperature); 0 for dropped candidates
    seed: int                 # noise seed used by this step
    dropped: int = 0          # candidates with a non-finite loss (nonfinite="drop")
    aux: Any = None           # what the validation closure returned after its loss, if anything
    val_loss_tensor: Optional[torch.Tensor] = None  # val_loss as the closure's detached tensor
    ess: float = float("nan")  # effective sample size of the weights, 1 / sum(w_k^2), in [1, K]
    collapsed: bool = False   # ess < COLLAPSE_ESS or all losses equal: the estimate is ~0 (warned)
