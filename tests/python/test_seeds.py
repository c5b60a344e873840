"""EvoGrad's seeds: each step's seed from the base seed and the step, runs that
reproduce, and a default base seed that draws nothing from torch's generator."""
import subprocess
import sys

import pytest
import torch

import evograd
from fixtures import KW, mlp_fixture


def test_seeds_advance_and_runs_reproduce():
    P, H, train, val = mlp_fixture(torch.float64)
    meta = evograd.EvoGrad(P, H, **KW)
    r = [meta.step(lambda: train(P), lambda: val(P)) for _ in range(3)]
    assert [x.seed for x in r] == [evograd.step_seed(123, t) for t in range(3)]
    assert len({x.seed for x in r}) == 3 and not torch.equal(r[0].losses, r[1].losses)
    # SplitMix64's published first outputs for state 0 are mix64(t * GOLDEN):
    # the "mixed" schedule of base 0 (as signed 64-bit integers).
    known = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    signed = [k - (1 << 64) if k >> 63 else k for k in known]
    assert [evograd.step_seed(0, t) for t in (1, 2, 3)] == signed
    # Nearby bases: unrelated sequences (the old rule shared all but one seed).
    a = {evograd.step_seed(0, t) for t in range(1000)}
    b = {evograd.step_seed(1, t) for t in range(1000)}
    assert len(a) == 1000 and not a & b
    old_a = {evograd.step_seed(0, t, "consecutive") for t in range(1000)}
    old_b = {evograd.step_seed(1, t, "consecutive") for t in range(1000)}
    assert len(old_a & old_b) == 999 and evograd.step_seed(2**63 - 1, 1, "consecutive") == 0
    legacy = evograd.EvoGrad(P, H, seed_schedule="consecutive", **KW)
    assert [legacy.step(lambda: train(P), lambda: val(P)).seed for _ in range(3)] == [123, 124, 125]
    with pytest.raises(ValueError, match="seed_schedule"):
        evograd.EvoGrad(P, H, seed_schedule="random", **KW)


def test_default_seed_leaves_the_random_stream_alone_and_reproduces(tmp_path):
    P, H, _, _ = mlp_fixture(torch.float64)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    first, second = evograd.EvoGrad(P, H).seed, evograd.EvoGrad(P, H).seed
    assert torch.equal(torch.get_rng_state(), state), "construction drew from torch's generator"
    assert first != second
    code = ("import torch, evograd; torch.manual_seed(%d); p = torch.zeros(2, requires_grad=True); "
            "print(evograd.EvoGrad([p], [torch.zeros(1, requires_grad=True)], buffers=[]).seed)")
    runs = [subprocess.run([sys.executable, "-c", code % s], capture_output=True, text=True,
                           cwd=tmp_path, timeout=300) for s in (7, 7, 8)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout == runs[1].stdout != runs[2].stdout
