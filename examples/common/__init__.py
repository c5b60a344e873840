"""Pieces the example programs share. Importing the package also lets them
find this checkout's `evograd` package (torch_ops/evograd) when nothing else
provides it, so that `examples/*/train.py --help` runs without PYTHONPATH.
It is appended to the path: an installed or PYTHONPATH evograd comes first."""
import os
import sys

_TORCH_OPS = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "torch_ops"))
if _TORCH_OPS not in sys.path:
    sys.path.append(_TORCH_OPS)
