"""Finds and loads the compiled operator library (torch.ops.evograd.*).

Where it looks, in order:

1. ``EVOGRAD_LIBRARY``, a path to ``libevograd_ops.so`` (an explicit choice);
2. inside the package, where ``pip install`` puts it;
3. only when this package is the one in an evograd source checkout
   (``torch_ops/evograd`` beside the project's CMakeLists.txt): the
   checkout's ``build/`` folder, after a plain ``cmake -B build``.

Beside the library lies ``libevograd_ops.json``, written by the build, naming
the torch it was compiled for. A C++ library built for another torch does
not load cleanly (missing symbols, or a crash in its static initialisers), so
the record is read first and a mismatch is an ImportError that names both
versions and the command that rebuilds.
"""
import ctypes
import json
import os
from pathlib import Path

import torch

LIBRARY_ENV = "EVOGRAD_LIBRARY"
_NAME = "libevograd_ops.so"
_RECORD = "libevograd_ops.json"
_HERE = Path(__file__).resolve().parent
_REBUILD = ("rebuild evograd against this torch: `pip install --no-build-isolation "
            "--force-reinstall <evograd checkout>` (or `make build` in a checkout)")


def _checkout_root():
    """The source checkout this package sits in, or None."""
    root = _HERE.parents[1]
    try:
        head = (root / "CMakeLists.txt").read_text(errors="replace")[:4000]
    except OSError:
        return None
    if _HERE == root / "torch_ops" / "evograd" and "project(evograd " in head:
        return root
    return None


def _candidates():
    env = os.environ.get(LIBRARY_ENV)
    if env:
        yield Path(env)
        return
    # An editable install maps the package to the sources and the built
    # library to site-packages: both folders are on the package's __path__.
    for folder in _package_path():
        yield Path(folder) / _NAME
    root = _checkout_root()
    if root is not None:
        yield root / "build" / _NAME


def _package_path():
    import sys
    package = sys.modules.get(__name__.rpartition(".")[0])  # initialising: __path__ is set
    return list(getattr(package, "__path__", None) or [str(_HERE)])


def _release(version: str) -> str:
    return version.split("+")[0]


def _check_built_for(path: Path) -> dict:
    record = path.with_name(_RECORD)
    try:
        info = json.loads(record.read_text())
        built_for = str(info["torch"])
    except (OSError, ValueError, KeyError) as err:
        raise ImportError(f"evograd: {path} has no readable build record ({record}: {err}); "
                          + _REBUILD) from None
    running = torch.__version__
    # A LibTorch-only build knows the release, not pip's local tag (+cpu).
    same = built_for == running or ("+" not in built_for and built_for == _release(running))
    if not same:
        raise ImportError(f"evograd: {path} was built for torch {built_for}, but this Python "
                          f"runs torch {running}; " + _REBUILD)
    return info


def _list_operators():
    """torch.ops.evograd fills its attributes on first lookup; look every
    operator up once so that dir() and tab completion list them all."""
    for schema in torch._C._jit_get_all_schemas():
        if schema.name.startswith("evograd::"):
            getattr(torch.ops.evograd, schema.name.split("::", 1)[1])


def load():
    """Checks and loads the operators once; returns (path, build record)."""
    tried = []
    for path in _candidates():
        tried.append(str(path))
        if path.is_file():
            info = _check_built_for(path)
            try:
                torch.ops.load_library(str(path))
            except OSError as err:
                raise ImportError(f"evograd: cannot load {path}: {err}; " + _REBUILD) from None
            _list_operators()
            return path, info
    raise ImportError(
        "evograd: operator library not found (looked in: " + ", ".join(tried) + "). "
        "Install the package (`pip install --no-build-isolation <evograd checkout>`), or in a "
        "checkout run `make build`, or set " + LIBRARY_ENV + " to the path of " + _NAME + ".")


library_path, build_record = load()


def cpu_kernels() -> str:
    """Which build of the CPU kernels runs in this process: "avx512", "avx2"
    or "portable". The widest this CPU runs, unless the environment variable
    EVOGRAD_CPU_KERNELS names a narrower one (one this CPU cannot run prints
    a warning on stderr and the widest runs). All builds give the same bits."""
    name = ctypes.CDLL(str(library_path)).evograd_cpu_kernels_name
    name.restype = ctypes.c_char_p
    return name().decode()
