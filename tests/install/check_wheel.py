"""The wheel `pip install --no-build-isolation .` installs, checked as a user
gets it: its files, its metadata, its library's RUNPATH, and an import from an
unrelated folder with no environment variables that runs an op.

    python tests/install/check_wheel.py WHEEL_DIR
"""
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import torch

failures = []


def check(ok, what):
    print(("ok    " if ok else "FAIL  ") + what)
    if not ok:
        failures.append(what)


def main(wheel_dir: Path):
    wheels = sorted(wheel_dir.glob("evograd-*.whl"))
    check(len(wheels) == 1, f"one evograd wheel in {wheel_dir}")
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        with zipfile.ZipFile(wheels[0]) as z:
            names = z.namelist()
            z.extractall(site)
        for f in ("evograd/__init__.py", "evograd/libevograd_ops.so", "evograd/libevograd_ops.json"):
            check(f in names, f"wheel holds {f}")
        meta = next(n for n in names if n.endswith(".dist-info/METADATA"))
        text = (site / meta).read_text()
        check("License-Expression: BSD-3-Clause" in text, "metadata declares BSD-3-Clause")
        check(any(n.endswith("licenses/LICENSE") for n in names), "wheel carries LICENSE")
        dyn = subprocess.run(["readelf", "-d", str(site / "evograd" / "libevograd_ops.so")],
                             capture_output=True, text=True).stdout
        runpath = [l for l in dyn.splitlines() if "RUNPATH" in l or "RPATH" in l]
        check(bool(runpath) and "$ORIGIN/../torch/lib" in runpath[0], "RUNPATH finds torch beside the package")
        check(bool(runpath) and "/build/" not in runpath[0], "RUNPATH has no build folder")
        torch_site = str(Path(torch.__file__).resolve().parents[1])
        code = ("import sys; sys.path[:0] = [%r]; sys.path.append(%r); import torch, evograd; "
                "t = evograd.perturb([torch.zeros(3)], 1, 0, 0.5); print(evograd.library_path, "
                "t[0].abs().tolist())" % (str(site), torch_site))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EVOGRAD_LIBRARY")}
        r = subprocess.run([sys.executable, "-S", "-c", code], cwd="/", env=env,
                           capture_output=True, text=True, timeout=300)
        check(r.returncode == 0 and str(site / "evograd") in r.stdout and "[0.5, 0.5, 0.5]" in r.stdout,
              "import from / with no environment loads the wheel's library and runs an op"
              + ("" if r.returncode == 0 else ": " + r.stderr.strip().splitlines()[-1]))
    total = 9
    print(f"{total - len(failures)} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
