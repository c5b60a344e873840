"""Finds and loads the compiled operator library (torch.ops.evograd.*)."""
import os
from pathlib import Path

import torch

LIBRARY_ENV = "EVOGRAD_LIBRARY"
_NAME = "libevograd_ops.so"


def _candidates():
    env = os.environ.get(LIBRARY_ENV)
    if env:
        yield Path(env)
        return
    here = Path(__file__).resolve().parent
    yield here / _NAME                       # installed next to the package
    yield here.parents[1] / "build" / _NAME  # source checkout after `make build`


def load():
    """Loads the operators once; returns the path loaded."""
    tried = []
    for path in _candidates():
        tried.append(str(path))
        if path.is_file():
            torch.ops.load_library(str(path))
            return path
    raise ImportError(
        "evograd: operator library not found (looked in: " + ", ".join(tried) + "). "
        "Run `make build`, or set " + LIBRARY_ENV + " to the path of " + _NAME + ".")


library_path = load()
