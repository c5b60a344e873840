"""Saving and resuming a training run so that it continues bit for bit as
if it had never stopped: everything the next iteration reads is in the
file (model, weighting net, both optimisers, the learning-rate schedule,
EvoGrad's seed sequence, the data order, random-number states, the logs).

A checkpoint is written to a temporary file and renamed into place; the
one it replaces is kept as `<path>.prev`. Several processes are not killed
at the same instant, so their newest checkpoints can be one interval apart;
with the previous one kept, they can always resume from an iteration that
every process has (`iterations` lists them, the caller agrees on one).
"""
import os
from pathlib import Path

import torch


def rank_path(path, rank, world):
    """One file per rank when several run (their logs differ), else `path`."""
    return Path(path) if world == 1 else Path(f"{path}.rank{rank}")


def save(path, iteration, objects, extra):
    """objects: name -> anything with state_dict(); extra: plain picklable values."""
    state = {"iteration": iteration, "extra": extra,
             "objects": {name: obj.state_dict() for name, obj in objects.items()},
             "torch_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    if path.exists():
        os.replace(path, _previous(path))
    os.replace(tmp, path)


def iterations(path):
    """{iteration: file} of the checkpoints kept at `path` (none: {})."""
    found = {}
    for file in (_previous(Path(path)), Path(path)):
        if file.exists():
            found[_read(file)["iteration"]] = file
    return found


def load(path, objects, iteration):
    """Restores objects in place from the checkpoint of `iteration` kept at
    `path`; returns (iteration, extra)."""
    kept = iterations(path)
    if iteration not in kept:
        raise ValueError(f"no checkpoint of iteration {iteration} at {path} (kept: {sorted(kept)})")
    state = _read(kept[iteration])
    missing = set(objects) - set(state["objects"])
    if missing:
        raise ValueError(f"checkpoint {kept[iteration]} has no state for {sorted(missing)}; was it written by "
                         f"another method or configuration?")
    for name, obj in objects.items():
        obj.load_state_dict(state["objects"][name])
    torch.set_rng_state(state["torch_rng"])
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return state["iteration"], state["extra"]


def _previous(path):
    return path.with_name(path.name + ".prev")


def _read(file):
    return torch.load(file, map_location="cpu", weights_only=False) if _has_weights_only() \
        else torch.load(file, map_location="cpu")


def _has_weights_only():
    import inspect
    return "weights_only" in inspect.signature(torch.load).parameters
