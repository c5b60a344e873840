"""EvoGrad over a model sharded by FSDP2's fully_shard (gloo on the CPU,
float64, uneven row shards on 2 and 3 ranks): every rank's rows of every
candidate and of theta* are the unsharded model's, bit for bit; a short
training run (meta-steps, meta-updates, FSDP's own SGD steps) follows the
unsharded single-process run to float64 rounding; FSDP settings that would
change what the sharded gradient means are refused on every rank."""
import pytest
import torch
import torch.distributed as dist

import evograd
import fsdp_jobs
from ranks import run_ranks

try:
    from torch.distributed.fsdp import fully_shard  # noqa: F401
    HAVE_FSDP2 = dist.is_available() and dist.is_gloo_available()
except Exception:  # noqa: BLE001  (torch 1.13 on Python 3.11 raises ValueError here)
    HAVE_FSDP2 = False

pytestmark = pytest.mark.skipif(not HAVE_FSDP2, reason="FSDP2 (torch.distributed.fsdp."
                                "fully_shard) and gloo are not in this torch")


def whole(per_rank):
    """Each parameter put together from the ranks' row blocks (rank order)."""
    return [torch.cat(rows) for rows in zip(*per_rank)]


@pytest.mark.parametrize("world", [2, 3])
@pytest.mark.parametrize("inside", [True, False], ids=["lambda-in-model", "lambda-outside"])
def test_sharded_training_follows_the_unsharded_run(world, inside, tmp_path):
    job = "job_fsdp_training" if inside else "job_fsdp_training_outside"
    ranks = run_ranks(f"fsdp_jobs.{job}", world, tmp_path)
    want = fsdp_jobs.reference_training(inside)
    o = fsdp_jobs.OPTIONS
    assert any(len({r["initial"][i].shape[0] for r in ranks}) > 1
               for i in range(len(want["initial"])))  # uneven shards
    for got in ranks:
        assert got["seeds"] == want["seeds"]
        assert all(got["untouched"]), "a meta-step changed the shards or their .grad"
    initial = whole([r["initial"] for r in ranks])
    for a, b in zip(initial, want["initial"]):
        assert torch.equal(a, b)
    # First step: what FSDP gathered for each candidate and for theta*.
    seed = want["seeds"][0]
    seen = [r["seen"] for r in ranks]
    for k in range(o["population"]):
        expected = evograd.perturb(initial, seed, k, o["sigma"])
        for a, b in zip(whole([s["train"][k] for s in seen]), expected):
            assert torch.equal(a, b), f"candidate {k}"
    expected = evograd.combine(initial, ranks[0]["losses"][0], o["temperature"], seed, o["sigma"])
    for a, b in zip(whole([s["val"][0] for s in seen]), expected):
        assert torch.equal(a, b), "theta*"
    # The run: a data-parallel mean differs from one mean over the whole
    # batch by float64 rounding only.
    for it in range(fsdp_jobs.ITERATIONS):
        for got in ranks:
            torch.testing.assert_close(got["grads"][it], want["grads"][it], rtol=0, atol=1e-10)
            torch.testing.assert_close(got["losses"][it], want["losses"][it], rtol=0, atol=1e-12)
            assert got["val"][it] == pytest.approx(want["val"][it], abs=1e-12)
            assert torch.equal(got["grads"][it], ranks[0]["grads"][it])  # same on every rank
    for a, b in zip(whole([r["final"] for r in ranks]), want["final"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    for got in ranks:
        for a, b in zip(got["hyper"], want["hyper"]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_misuse_is_an_error_on_every_rank(tmp_path):
    ranks = run_ranks("fsdp_jobs.job_fsdp_errors", 2, tmp_path)
    for got in ranks:
        assert "parallel='data'" in got["no parallel"]
        assert "cannot evaluate different candidates" in got["candidates"]
        assert "need the FSDP model" in got["list without module"]
        assert "divide factor" in got["divide factor"]
        assert "gradient sync is off" in got["gradient sync off"]
        assert got["divide factor untouched"] and got["gradient sync off untouched"]
        assert "cannot read FSDP's reduce_grads" in got["settings unknown"]
        # rank 1's candidate 2 is NaN: dropped everywhere, the same lambda-gradient
        assert got["nan candidate, drop"] is None and got["nan candidate, drop dropped"] == 1
        assert torch.isfinite(got["nan candidate, drop grad"]).all()
        for name in ("nan candidate, drop", "nan candidate, raise", "nan validation"):
            assert got[name + " untouched"], name
    assert torch.equal(ranks[0]["nan candidate, drop grad"], ranks[1]["nan candidate, drop grad"])
    # the rank with the NaN says what it saw; the other that a peer failed
    assert "training loss is not finite" in ranks[1]["nan candidate, raise"]
    assert "validation loss is not finite" in ranks[1]["nan validation"]
    for name in ("nan candidate, raise", "nan validation"):
        assert ranks[0][name].startswith("PeerFailed"), ranks[0][name]
    # estimator="jvp": the same in each of its three passes
    for phase in ("inner", "validation", "through"):
        name = "jvp nan " + phase
        assert ranks[0][name].startswith("PeerFailed"), ranks[0][name]
        assert "loss is not finite" in ranks[1][name], ranks[1][name]
        for got in ranks:
            assert got[name + " untouched"], name
    for got in ranks:
        assert "estimator='jvp'" in got["jvp lookahead"]


@pytest.mark.parametrize("world", [2, 4])
def test_jvp_on_shards_is_one_step_on_the_whole_batch(world, tmp_path):
    """estimator="jvp" with parallel="data" over FSDP shards (uneven rows:
    7 over 2 and 4 ranks) gives one process's step on the whole batch, in
    float64 to rounding, lambda inside the model or outside; the kept inner
    gradient is the whole batch's and an FSDP update on it is the
    unsharded one's."""
    ranks = run_ranks("fsdp_jobs.job_fsdp_jvp", world, tmp_path)
    want = fsdp_jobs.reference_jvp()
    for key, w in want.items():
        inside, keep = key
        assert w["grad"].abs().max() > 1e-3  # a hypergradient there is to get wrong
        for got in (r[key] for r in ranks):
            g = got["grad"]
            assert ((g - w["grad"]).norm() / w["grad"].norm()).item() < 1e-6, key
            assert got["same"], "the step changed the rows or FSDP's settings"
            torch.testing.assert_close(got["losses"], w["losses"], rtol=1e-12, atol=0)
            assert got["val"] == pytest.approx(w["val"], rel=1e-12)
            if keep:
                for a, b in zip(got["kept"], w["kept"]):
                    assert ((a - b).norm() / b.norm()).item() < 1e-6, key
            else:
                assert all(k is None for k in got["kept"]), "the default keeps no gradient"
            for a, b in zip(got["after"], w["after"]):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
        assert all(torch.equal(r[key]["grad"], ranks[0][key]["grad"]) for r in ranks)
        # The step's own exchanges (float64): a failure flag after each of
        # FSDP's two backwards, |g'|^2 and its flag, g' gathered whole (each
        # tensor padded to its longest piece), then lambda's N values, a flag
        # per hyperparameter tensor, the two training losses, the validation
        # loss and a failure flag.
        widths = [max(r[key]["rows"][i] for r in ranks) for i in range(len(ranks[0][key]["rows"]))]
        n, t = w["grad"].numel(), (2 if inside else 1)
        want_bytes = 8 * (1 + 1 + 2 + sum(widths) + n + t + 2 + 1 + 1)
        for r in ranks:
            assert r[key]["sent"] == (want_bytes, 3 + len(widths) + 1), key
