"""The C++ EvoGrad's parallel path on process groups Python made (gloo,
spawned ranks). A probe operator (tests/ops/parallel_probe.cpp, built with
the C++ suites) takes one C++ step per rank on a group it finds by name in
c10d's registry: the lambda-gradient equals the C++ single-process step on
the whole batch, and the bytes are the construction check, then 2K + N + 4
values per step (K + N + 2 with candidates; docs/api.md). (The gloo suite in
tests/ops/test_parallel.cpp covers the same path where C++ can build its
own groups: Debian's LibTorch.)"""
import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ranks import run_ranks

ROOT = Path(__file__).resolve().parents[2]
N_HYPER, AGREED_FIELDS = 4, 18
P = 6 * 16 + 16 + 16 * 3 + 3  # parallel_problem.h's classifier, hidden 16


def probe_library():
    folder = Path(os.environ.get("EVOGRAD_TEST_DIR", ROOT / "build" / "main" / "tests"))
    path = folder / "libevograd_parallel_probe.so"
    return path if path.exists() else None


pytestmark = pytest.mark.skipif(
    probe_library() is None or not dist.is_available() or not dist.is_gloo_available(),
    reason="the probe operator is built with the C++ suites where c10d has a group registry "
           "(torch 2.x); Debian's torch 1.13 runs tests/ops/test_parallel.cpp instead")


def data():
    g = torch.Generator().manual_seed(3)
    x, xv = (torch.randn(n, 6, generator=g, dtype=torch.float64) for n in (12, 12))
    y, yv = (torch.randint(0, 3, (n,), generator=g) for n in (12, 12))
    return x, y, xv, yv


def rows(t, rank, world):
    n = t.shape[0] // world
    return t[rank * n:(rank + 1) * n]


def step(parallel, population, rank=0, world=1, check_replicas=False, drift=0.0,
         estimator="evograd"):
    if not hasattr(torch.ops.evograd_probe, "step"):
        torch.ops.load_library(str(probe_library()))
    group = dist.group.WORLD.group_name if parallel else ""
    x, y, xv, yv = data()
    if parallel == "data":
        x, y, xv, yv = (rows(t, rank, world) for t in (x, y, xv, yv))
    out = torch.ops.evograd_probe.step(parallel, group, population, x, y, xv, yv,
                                       check_replicas, drift, estimator)
    return out[:-1], int(out[-1])


def job_data_3(rank, world):
    return step("data", 3, rank, world)


def job_jvp(rank, world):
    return step("data", 0, rank, world, estimator="jvp")


def job_lookahead(rank, world):
    return step("data", 0, rank, world, estimator="lookahead")


def job_candidates_4(rank, world):
    return step("candidates", 4, rank, world)


def job_check_replicas(rank, world):
    """Equal replicas step as usual; one weight moved by 1e-12 on rank 1 is
    an error on every rank (caught: the job reports the message)."""
    ok = step("data", 3, rank, world, check_replicas=True)
    try:
        step("data", 3, rank, world, check_replicas=True, drift=1e-12)
        drifted = "no error"
    except RuntimeError as e:
        drifted = str(e)
    return ok, drifted


def bytes_expected(population, projections=True):
    """Construction (the options gathered, rank 0's seed), then the step:
    losses, projections and the validation loss (data-parallel only: with
    candidates every rank has the same theta*), the lambda-gradient; each
    exchange with one failure count."""
    step = (population + 1) + (population + 2 if projections else 0) + (N_HYPER + 1)
    return 8 * (AGREED_FIELDS + 1) + 8 + 8 * step


@pytest.mark.parametrize("world", [2, 3])
def test_cpp_data_parallel_equals_one_step_on_the_whole_batch(world, tmp_path):
    want, none_sent = step("", 3)
    assert none_sent == 0
    ranks = run_ranks("test_cpp_parallel.job_data_3", world, tmp_path)
    for grad, sent in ranks:
        torch.testing.assert_close(grad, want, rtol=0, atol=1e-10)
        assert torch.equal(grad, ranks[0][0])
        assert sent == bytes_expected(3)


def test_cpp_candidate_parallel_equals_the_single_process_step(tmp_path):
    want, _ = step("", 4)
    for grad, sent in run_ranks("test_cpp_parallel.job_candidates_4", 2, tmp_path):
        torch.testing.assert_close(grad, want, rtol=0, atol=1e-12 * (1 + float(want.abs().max())))
        assert sent == bytes_expected(4, projections=False)


def test_cpp_check_replicas_catches_a_drifted_replica(tmp_path):
    want, _ = step("", 3)
    for (grad, sent), drifted in run_ranks("test_cpp_parallel.job_check_replicas", 2, tmp_path):
        torch.testing.assert_close(grad, want, rtol=0, atol=1e-10)
        assert sent == bytes_expected(3) + 8 * 4  # the fingerprints: 4 int64 gathered
        assert "the replicas have drifted apart" in drifted, drifted


@pytest.mark.parametrize("estimator, world", [("jvp", 2), ("jvp", 4), ("lookahead", 2)])
def test_cpp_unrolled_data_parallel_equals_one_process_on_the_whole_batch(estimator, world,
                                                                            tmp_path):
    """lambda's gradient and the kept inner gradient (keep_train_grad) of the
    ranks' step against C++'s one-process step on the whole batch; a step
    sends the inner and the validation gradient (P values and a failure
    count each) and one exchange of lambda's N values, a defined-flag per
    hyperparameter tensor, the losses, the validation loss and a failure
    count."""
    want, _ = step("", 0, estimator=estimator)
    assert want.numel() == N_HYPER + P
    ranks = run_ranks(f"test_cpp_parallel.job_{estimator}", world, tmp_path)
    losses = 2 if estimator == "jvp" else 3
    for got, sent in ranks:
        for part in (slice(0, N_HYPER), slice(N_HYPER, None)):
            assert float((got[part] - want[part]).norm() / want[part].norm()) < 1e-6
        assert torch.equal(got, ranks[0][0])
        assert sent == 8 * (AGREED_FIELDS + 1) + 8 + 8 * (2 * (P + 1) + N_HYPER + 2 + losses + 2)
