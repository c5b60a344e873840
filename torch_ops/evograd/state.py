"""An EvoGrad's checkpoint: what a resumed run needs to draw the same noise
from here on (the base seed and the steps taken), the inner learning rate
where it is a number (an optimiser's is in the optimiser's and its
scheduler's own state), and the SAVED options of options.def with the
tensors' sizes, compared on load. The step hands in what it holds and
applies what ``load`` returns."""
from typing import Any, Dict, NamedTuple, Optional

from . import options


def recorded(values: Dict[str, Any], params, hyperparams) -> dict:
    """The SAVED options among ``values`` and the tensors' sizes."""
    return {**{o.name: values[o.name] for o in options.OPTIONS if o.saved},
            "parameter_elements": sum(p.numel() for p in params),
            "hyperparameter_elements": sum(h.numel() for h in hyperparams)}


def state_dict(seed: int, steps_taken: int, inner_lr: Optional[float], mine: dict) -> dict:
    """``inner_lr``: the number the step was given, None for an optimiser's."""
    return {"format": 1, "seed": seed, "steps_taken": steps_taken,
            "inner_lr": inner_lr, "options": mine}


class Resumed(NamedTuple):
    seed: int
    steps_taken: int
    inner_lr: Optional[float]  # None: keep the step's own (an optimiser's, or none saved)


def load(state: dict, mine: dict, numeric_inner_lr: bool) -> Resumed:
    """What to continue from, or ValueError if ``state`` is not an EvoGrad
    checkpoint with the options ``mine`` (``recorded`` of this step)."""
    if not isinstance(state, dict) or state.get("format") != 1:
        raise ValueError("not an EvoGrad state_dict (expected a dict with format 1)")
    # inner_lr follows a schedule: the saved value is taken, not compared
    # (checkpoints made before it could change list it among the options).
    theirs = options.with_defaults(state.get("options", {}))
    diff = [f"{k}: saved {theirs.get(k)!r}, here {v!r}" for k, v in mine.items()
            if theirs.get(k) != v]
    if diff:
        raise ValueError("the saved EvoGrad had other options: " + "; ".join(diff))
    seed, steps = state.get("seed"), state.get("steps_taken")
    if not isinstance(seed, int) or not isinstance(steps, int) or steps < 0:
        raise ValueError("state_dict needs an int seed and a non-negative int steps_taken")
    lr = state.get("inner_lr", theirs.get("inner_lr"))
    return Resumed(seed, steps, lr if numeric_inner_lr else None)
