"""EvoGrad on several processes (torch.distributed, gloo on the CPU): the
data-parallel step equals one step on the concatenated batch, the
candidate-parallel step equals the single-process step, a step sends
2K + N + 4 values whatever the model's size, DDP replicas stay bit-identical
and DDP's own all-reduce never runs inside a meta-step, errors on one rank
reach every rank, and a run killed with SIGKILL resumes bit for bit."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import evograd
import distributed_jobs as jobs
from distributed_jobs import Hyper, make_data, make_model, one_step
from ranks import free_port, run_ranks

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("world", [2, 3])
def test_data_parallel_step_equals_one_step_on_the_whole_batch(world, tmp_path):
    ranks = run_ranks("job_data_step", world, tmp_path)
    batches = (make_data(12, 1), make_data(6, 2))
    for hidden in (16, 160):
        want, r, _ = one_step(make_model(hidden), Hyper(), batches, population=3, sigma=1e-3,
                              temperature=0.05, seed=11)
        for got in ranks:
            assert torch.allclose(got[hidden]["grad"], want, rtol=0, atol=1e-10), \
                (got[hidden]["grad"], want)
            assert torch.allclose(got[hidden]["losses"], r.losses, rtol=0, atol=1e-12)
            assert abs(got[hidden]["val"] - r.val_loss) < 1e-12
            assert got[hidden]["seed"] == r.seed
        # Identical on every rank, to the bit: all-reduce results are shared.
        assert all(torch.equal(g[hidden]["grad"], ranks[0][hidden]["grad"]) for g in ranks)
    # What one step sends: K losses, K projections (+ the validation loss),
    # N hyperparameter elements, and a failure flag with each: float64 values.
    K, N = 3, 4
    expected = 8 * ((K + 1) + (K + 2) + (N + 1))
    for got in ranks:
        assert got[16]["step_bytes"] == got[160]["step_bytes"] == expected
    # The 160-wide model has ~9x the parameters of the 16-wide one.
    assert sum(p.numel() for p in make_model(160).parameters()) > \
        8 * sum(p.numel() for p in make_model(16).parameters())


def test_candidate_parallel_equals_single_process(tmp_path):
    ranks = run_ranks("job_candidates_step", 2, tmp_path)
    want, r, _ = one_step(make_model(), Hyper(), (make_data(12, 1), make_data(6, 2)),
                          population=4, sigma=1e-3, temperature=0.05, seed=11)
    for got in ranks:
        assert torch.equal(got["losses"], r.losses)  # each loss computed once, by its owner
        assert torch.allclose(got["grad"], want, rtol=0, atol=1e-12)
        assert got["val"] == r.val_loss
    assert torch.equal(ranks[0]["grad"], ranks[1]["grad"])


def test_ddp_training_keeps_replicas_identical_without_ddp_allreduce_in_meta_step(tmp_path):
    ranks = run_ranks("job_ddp_training", 2, tmp_path)
    for key in ("params", "hyper"):
        for a, b in zip(ranks[0][key], ranks[1][key]):
            assert torch.equal(a, b), key
    for got in ranks:
        assert got["meta_step_ddp_calls"] == [0] * 20  # DDP's P-sized all-reduce: never
        assert got["ddp_calls"] >= 20                   # ...but in every ordinary update
    # The hyperparameters did move (the meta-step is not a no-op).
    assert not torch.equal(ranks[0]["hyper"][1], Hyper().class_logits.detach())


def test_errors_on_one_rank_reach_every_rank(tmp_path):
    r0, r1 = run_ranks("job_failures", 2, tmp_path)
    for got in (r0, r1):
        assert got["options"].startswith("ValueError") and "sigma differs across ranks" in \
            got["options"] and "rank 0: 0.001, rank 1: 0.002" in got["options"]
        assert got["restored"]
    assert "population must be >= 2" in r0["bad_local"]
    assert r1["bad_local"].startswith("PeerFailed") and "rank(s) [0]" in r1["bad_local"]
    # data-parallel, rank 1's training closure raised
    assert r1["data"] == "RuntimeError: closure failed on purpose"
    assert r0["data"].startswith("PeerFailed") and "1 other rank(s) failed" in r0["data"]
    # candidate-parallel, rank 0's validation closure raised
    assert r0["candidates"] == "RuntimeError: closure failed on purpose"
    assert r1["candidates"].startswith("PeerFailed")
    for got in (r0, r1):  # check_replicas: one weight one ulp apart on rank 1
        assert "replicas have drifted apart" in got["drift"]


def _launch(world, tmp, name, extra):
    """The checkpointing training run on `world` ranks as separate processes."""
    out, ckpt = tmp / f"out_{name}", tmp / "ckpt"
    out.mkdir(parents=True, exist_ok=True)
    ckpt.mkdir(parents=True, exist_ok=True)
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=port, OMP_NUM_THREADS="1")
        procs.append(subprocess.Popen(
            [sys.executable, str(HERE / "distributed_jobs.py"), "--iterations", "12",
             "--every", "4", "--checkpoint", str(ckpt), "--out", str(out), *extra],
            env=env, stderr=subprocess.PIPE, text=True))
    codes = [p.wait(timeout=180) for p in procs]
    return codes, [p.stderr.read() for p in procs], out


def test_sharded_list_gets_the_whole_lists_noise(tmp_path):
    """3 ranks, uneven shards of one flattened list: each rank's candidate and
    combination are the whole list's, bit for bit; the all-reduced partial
    projections equal the whole list's to float64 rounding."""
    results = run_ranks("job_sharded_list", 3, tmp_path)
    cuts = results[0]["cuts"]
    assert len(set(b - a for a, b in zip(cuts, cuts[1:]))) == 3  # uneven
    whole = jobs.sharded_whole_list()
    flat = torch.cat([t.flatten() for t in whole])
    losses = torch.tensor([0.3, 0.1, 0.4, 0.2], dtype=torch.float64)
    for noise in ("sign", "gauss"):
        cand = torch.cat([t.flatten() for t in evograd.perturb(whole, 21, 3, 0.05, noise)])
        comb = torch.cat([t.flatten() for t in evograd.combine(whole, losses, 0.2, 21, 0.05, noise)])
        c = evograd.project(whole, 21, 4, 0.05, noise)
        for rank, got in enumerate(results):
            a, b = cuts[rank], cuts[rank + 1]
            assert torch.equal(got[f"candidate_{noise}"], cand[a:b]), (noise, rank)
            assert torch.equal(got[f"combined_{noise}"], comb[a:b]), (noise, rank)
        # |z| < 7: each grouping of the sum is within n ulps of sum |g| * 7 sigma
        bound = 2 * flat.numel() * 2.0**-53 * float(flat.abs().sum()) * 7 * 0.05
        for got in results:
            assert torch.allclose(got[f"projections_{noise}"], c, rtol=0, atol=bound), noise
    with pytest.raises(ValueError, match="offset .* must be >= 0"):
        evograd.perturb(whole, 21, 3, 0.05, offset=-1)


# Two ranks, which must also agree on where to resume; one process is the
# MWN example's resume test (tests/examples/test_mwn_processes.py).
@pytest.mark.parametrize("world", [2])
def test_run_killed_by_sigkill_resumes_bit_for_bit(world, tmp_path):
    codes, err, whole = _launch(world, tmp_path / "a", "whole", [])
    assert codes == [0] * world, err
    codes, err, _ = _launch(world, tmp_path / "b", "killed", ["--kill-after", "6"])
    assert codes == [-signal.SIGKILL] * world, err  # really killed, after the checkpoint at 4
    codes, err, resumed = _launch(world, tmp_path / "b", "resumed", ["--resume"])
    assert codes == [0] * world, err
    for rank in range(world):
        a, b = torch.load(whole / f"rank{rank}.pt"), torch.load(resumed / f"rank{rank}.pt")
        for key in ("params", "hyper"):
            assert all(torch.equal(x, y) for x, y in zip(a[key], b[key])), (rank, key)
        assert a["evograd"] == b["evograd"]


def test_state_dict_round_trip_and_mismatch():
    meta = evograd.EvoGrad(make_model(), Hyper(), seed=7)
    meta.steps_taken = 5
    state = meta.state_dict()
    other = evograd.EvoGrad(make_model(), Hyper(), seed=1)
    other.load_state_dict(state)
    assert (other.seed, other.steps_taken) == (7, 5)
    with pytest.raises(ValueError, match="sigma: saved 0.001, here 0.002"):
        evograd.EvoGrad(make_model(), Hyper(), sigma=2e-3).load_state_dict(state)
    with pytest.raises(ValueError, match="not an EvoGrad state_dict"):
        other.load_state_dict({"seed": 1})


def test_parallel_needs_an_initialised_process_group():
    with pytest.raises(ValueError, match="init_process_group"):
        evograd.EvoGrad(make_model(), Hyper(), parallel="data")
    with pytest.raises(ValueError, match="parallel must be one of"):
        evograd.EvoGrad(make_model(), Hyper(), parallel="model")
    with pytest.raises(ValueError, match="process_group is used only"):
        evograd.EvoGrad(make_model(), Hyper(), process_group=object())
