"""The README's install commands, run as written, as a new user meets them.

    python tests/install/readme_commands.py WORK

1. ``install-pip``: in a copy of the checkout and a fresh venv that holds
   nothing (the block itself installs the torch it names), every line of the
   block, verbatim; then the installed package is checked: its files and
   metadata, its library's RUNPATH and the libc10 it loads, and an import
   from ``/`` with no environment that runs an op.
2. ``install-cmake``: the CMake block, verbatim, with that venv's ``python``
   but a ``python3`` without torch first on PATH (and, on this machine,
   Debian's LibTorch installed): every installed library must load that
   venv's torch only; then the README's C++ example and examples/cpp are
   built against the installed package and run (tests/install/consumer.cmake).

The blocks are found by their ``<!-- readme:sh NAME -->`` markers, so the
README and this test cannot drift apart.
"""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what, flush=True)
    if not ok:
        failures.append(what)


def readme_block(name: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- readme:sh %s -->\n```sh\n(.*?)\n```" % re.escape(name), text, re.S)
    if not m:
        sys.exit(f"README.md has no <!-- readme:sh {name} --> block")
    return m.group(1) + "\n"


def run_block(name, cwd, env):
    block = readme_block(name)
    print(f"--- {name} (in {cwd}):\n{block}---", flush=True)
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=cwd, env=env)
    check(r.returncode == 0, f"README block {name} runs as written")
    return r.returncode == 0


def copy_checkout(dest: Path):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def loaded_torch_libraries(lib: Path, env) -> dict:
    """name -> resolved path of every torch library the loader gives `lib`."""
    out = subprocess.run(["ldd", str(lib)], capture_output=True, text=True, env=env).stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*(lib(?:c10|torch)\S*)\s*=>\s*(\S+)", line)
        if m:
            found[m.group(1)] = m.group(2)
    return found


def check_loads_only(lib: Path, torch_lib: Path, env):
    libs = loaded_torch_libraries(lib, env)
    check("libc10.so" in libs, f"{lib.name} needs libc10")
    outside = {k: v for k, v in libs.items()
               if Path(v).resolve().parent != torch_lib.resolve()}
    check(not outside, f"{lib.name} loads torch only from {torch_lib}"
          + (f" (also: {outside})" if outside else ""))


def main(work: Path):
    if work.exists():
        shutil.rmtree(work)
    src, venv, home, bin_ = work / "src", work / "venv", work / "home", work / "bin"
    for d in (src, home, bin_):
        d.mkdir(parents=True)
    copy_checkout(src)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    base = {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "EVOGRAD_LIBRARY", "VIRTUAL_ENV", "PYTHONHOME")}
    base["HOME"] = str(home)
    base.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", "2")
    # The user's activated venv.
    env = dict(base, VIRTUAL_ENV=str(venv), PATH=f"{venv / 'bin'}:{base['PATH']}")
    if not run_block("install-pip", src, env):
        return 1
    vpy = venv / "bin" / "python"
    site = Path(subprocess.run([str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    torch_lib = site / "torch" / "lib"
    for f in ("evograd/__init__.py", "evograd/libevograd_ops.so", "evograd/libevograd_ops.json",
              "evograd/options.def"):
        check((site / f).is_file(), f"installed {f}")
    dist = next(site.glob("evograd-*.dist-info"), None)
    check(dist is not None, "installed evograd's dist-info")
    if dist is not None:
        check("License-Expression: BSD-3-Clause" in (dist / "METADATA").read_text(),
              "metadata declares BSD-3-Clause")
        check(any(dist.rglob("LICENSE")), "dist-info carries LICENSE")
    ops = site / "evograd" / "libevograd_ops.so"
    dyn = subprocess.run(["readelf", "-d", str(ops)], capture_output=True, text=True).stdout
    runpath = [line for line in dyn.splitlines() if "RUNPATH" in line or "RPATH" in line]
    check(bool(runpath) and "$ORIGIN/../torch/lib" in runpath[0], "RUNPATH finds torch beside the package")
    check(bool(runpath) and str(src / "build") not in runpath[0], "RUNPATH has no build folder")
    check_loads_only(ops, torch_lib, base)
    code = ("import torch, evograd; t = evograd.perturb([torch.zeros(3)], 1, 0, 0.5); "
            "print(evograd.library_path, t[0].abs().tolist())")
    r = subprocess.run([str(vpy), "-c", code], cwd="/", env=base, capture_output=True, text=True)
    check(r.returncode == 0 and str(site / "evograd") in r.stdout and "[0.5, 0.5, 0.5]" in r.stdout,
          "import from / with no environment loads the installed library and runs an op"
          + ("" if r.returncode == 0 else ": " + (r.stderr.strip().splitlines() or ["?"])[-1]))

    # The CMake block: the venv's python by name, a python3 without torch first.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(work / "notorch")], check=True)
    (bin_ / "python3").symlink_to(work / "notorch" / "bin" / "python3")
    # a wrapper, not a link: a linked venv python would not find its pyvenv.cfg
    (bin_ / "python").write_text(f'#!/bin/sh\nexec "{vpy}" "$@"\n')
    (bin_ / "python").chmod(0o755)
    env = dict(base, PATH=f"{bin_}:{base['PATH']}")
    if not run_block("install-cmake", src, env):
        return 1
    prefix = home / ".local" / "evograd"
    for lib in ("libevograd_ops.so", "libevograd.so"):
        check_loads_only(prefix / "lib" / lib, torch_lib, base)
    r = subprocess.run(["cmake", f"-DPREFIX={prefix}", f"-DSOURCE_DIR={src}", f"-DWORK={work / 'consumer'}",
                        "-P", str(ROOT / "tests" / "install" / "consumer.cmake")], env=base)
    check(r.returncode == 0, "the README's C++ example and examples/cpp build and run against it")
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve()))
