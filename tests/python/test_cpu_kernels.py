"""Which build of the CPU kernels runs (evograd.cpu_kernels()), choosing one
with EVOGRAD_CPU_KERNELS, and the warning when the named build cannot run
here; every build this CPU runs gives the operators' results bit for bit.
The expected choice is read independently from /proc/cpuinfo's flags."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import evograd

WARNING = "EVOGRAD_CPU_KERNELS="


def cpu_flags():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def widest():
    flags = cpu_flags()
    if {"avx512f", "avx512dq", "avx512bw", "avx512vl"} <= flags:
        return "avx512"
    return "avx2" if "avx2" in flags else "portable"


# Runs a few operator calls under a chosen build; prints the build and the results.
CHILD = r"""
import json, sys, torch, evograd
torch.manual_seed(0)
out = {"build": evograd.cpu_kernels()}
losses = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)
for dtype in (torch.float32, torch.float64, torch.bfloat16):
    x = [torch.randn(5000).to(dtype), torch.randn(77).to(dtype), torch.randn(3001).to(dtype)]
    for noise in ("sign", "gauss"):
        p = evograd.perturb(x, 7, 1, 0.01, noise)
        c = evograd.combine(x, losses, 0.05, 7, 0.01, noise)
        g = evograd.project(x, 7, 3, 0.01, noise)
        out[f"{dtype} {noise}"] = [t.double().tolist() for t in p + c] + [g.tolist()]
print(json.dumps(out))
"""


def run(env_value):
    env = dict(os.environ)
    env.pop("EVOGRAD_CPU_KERNELS", None)
    if env_value is not None:
        env["EVOGRAD_CPU_KERNELS"] = env_value
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout), out.stderr


def test_this_process_runs_the_widest_build_the_cpu_has():
    if os.environ.get("EVOGRAD_CPU_KERNELS"):
        pytest.fail("the suite must run without EVOGRAD_CPU_KERNELS set")
    assert evograd.cpu_kernels() == widest()


def test_every_runnable_build_gives_the_same_bits_and_says_which_it_is():
    default, err = run(None)
    assert default["build"] == widest() and WARNING not in err
    runnable = ["portable"] + (["avx2"] if "avx2" in cpu_flags() else []) + \
        (["avx512"] if widest() == "avx512" else [])
    for name in runnable:
        got, err = run(name)
        assert got["build"] == name and WARNING not in err, (name, err)
        assert got == dict(default, build=name), name


@pytest.mark.parametrize("name", ["avx512", "sse9", "AVX2"])
def test_a_build_this_cpu_cannot_run_is_named_in_one_warning(name):
    got, err = run(name)
    if name == "avx512" and widest() == "avx512":
        assert got["build"] == "avx512" and WARNING not in err
        return
    assert got["build"] == widest()
    assert err.count(WARNING) == 1, err  # once, however many calls
    assert f"EVOGRAD_CPU_KERNELS={name} names CPU kernels this machine cannot run" in err
    assert f"running the {widest()} kernels" in err
