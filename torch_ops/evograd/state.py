"""An EvoGrad's checkpoint: what a resumed run needs to draw the same noise
from here on (the base seed and the steps taken), the inner learning rate
where it is a number (an optimiser's is in the optimiser's and its
scheduler's own state), and the SAVED options of options.def with the
tensors' sizes, compared on load."""
from . import options


def options_of(meta) -> dict:
    return {**{o.name: getattr(meta, o.name) for o in options.OPTIONS if o.saved},
            **sizes(meta)}


def sizes(meta) -> dict:
    return {"parameter_elements": sum(p.numel() for p in meta.params),
            "hyperparameter_elements": sum(h.numel() for h in meta.hyperparams)}


def state_dict(meta) -> dict:
    lr = meta._inner_lr if isinstance(meta._inner_lr, float) else None
    return {"format": 1, "seed": meta.seed, "steps_taken": meta.steps_taken,
            "inner_lr": lr, "options": options_of(meta)}


def load_state_dict(meta, state: dict) -> None:
    if not isinstance(state, dict) or state.get("format") != 1:
        raise ValueError("not an EvoGrad state_dict (expected a dict with format 1)")
    mine = options_of(meta)
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
    if lr is not None and isinstance(meta._inner_lr, float):
        meta.inner_lr = lr
    meta.seed, meta.steps_taken = seed, steps
