"""T1-T2's estimators on several processes (parallel="data", gloo on the
CPU): the ranks' step equals one process's step on the whole batch (lambda's
gradient and, with keep_train_grad, the parameters' .grad), plain and under
DDP (whose own all-reduce never runs inside the step); a step sends two
parameter-sized reductions and one of lambda's size; errors on one rank
reach every rank; and a one-training-pass loop keeps DDP replicas
bit-identical."""
import pytest
import torch
import torch.distributed as dist

import evograd
from distributed_jobs import Hyper, make_model
from ranks import run_ranks
from unrolled_jobs import ESTIMATORS, Shifted, estimators_on, reference, step_on, whole_batches

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("world", [2, 4])
def test_data_parallel_equals_one_process_on_the_whole_batch(world, tmp_path):
    ranks = run_ranks("unrolled_jobs.job_unrolled_data_step", world, tmp_path)
    want = reference(world)
    P = sum(p.numel() for p in make_model().parameters())
    N = sum(h.numel() for h in Hyper().parameters())
    for e in estimators_on(world):
        for wrapped in (False, True):
            for got in (r[e, wrapped] for r in ranks):
                assert relative(got["grad"], want[e]["grad"]) < 1e-6, (e, wrapped)
                assert relative(got["kept"], want[e]["kept"]) < 1e-6, (e, wrapped)
                assert torch.allclose(got["losses"], want[e]["losses"], rtol=1e-12, atol=0)
                assert abs(got["val"] - want[e]["val"]) < 1e-12 * abs(want[e]["val"])
                assert got["tensor"].dtype == torch.float64 and got["tensor"].dim() == 0
                assert got["restored"]
                # the inner and the validation gradient (P values and a failure
                # flag each, float64 here), then lambda's N values, one
                # defined-flag per hyperparameter tensor, the losses, the
                # validation loss and a failure flag
                losses = len(want[e]["losses"])
                assert got["bytes"] == 8 * (2 * (P + 1) + N + 2 + losses + 1 + 1), (e, got["bytes"])
                assert got["calls"] == 3
                assert got["ddp_calls"] == 0
            # the same bits on every rank: all-reduce results are shared
            assert all(torch.equal(r[e, wrapped]["grad"], ranks[0][e, wrapped]["grad"])
                       for r in ranks)
    # the reference is not trivially matched: the estimators' gradients differ
    if world == 2:
        assert relative(want["lookahead"]["grad"], want["jvp"]["grad"]) > 1e-12


def test_one_training_pass_per_iteration_keeps_ddp_replicas_identical(tmp_path):
    r0, r1 = run_ranks("unrolled_jobs.job_one_step_training", 2, tmp_path)
    for key in ("params", "hyper"):
        for a, b in zip(r0[key], r1[key]):
            assert torch.equal(a, b), key
    assert r0["ddp_calls"] == r1["ddp_calls"] == 0  # the model's gradient came from the step
    assert not torch.equal(r0["params"][0], make_model()[0].weight)
    assert not torch.equal(r0["hyper"][1], Hyper().class_logits.detach())


def test_errors_on_one_rank_reach_every_rank(tmp_path):
    r0, r1 = run_ranks("unrolled_jobs.job_unrolled_failures", 2, tmp_path)
    for e in ESTIMATORS:
        for phase in ("inner", "val", "through"):
            assert r1[e, phase] == "RuntimeError: closure failed on purpose", (e, phase)
            assert r0[e, phase].startswith("PeerFailed") and "1 other rank(s) failed" in \
                r0[e, phase], (e, phase, r0[e, phase])
    for got in (r0, r1):
        assert got["restored"]
        assert "estimator differs across ranks" in got["estimator"]
        assert "keep_train_grad differs across ranks" in got["keep"]
        assert "number of parameter elements differs" in got["shapes"]
        assert "replicas have drifted apart" in got["drift"]
    assert "the inner gradient" in r0["jvp", "inner"]
    assert "the validation gradient" in r0["jvp", "val"]
    assert "the lambda-gradient" in r0["jvp", "through"]


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_candidates_are_refused(estimator):
    with pytest.raises(ValueError, match="has no candidates to share out among ranks"):
        evograd.EvoGrad(make_model(), Hyper(), estimator=estimator, inner_lr=0.1,
                        parallel="candidates")


def test_a_gradient_autograd_returns_expanded(tmp_path):
    """A parameter used only through its sum has an expanded gradient; the
    ranks' mean is built beside it, not written into it."""
    want, _ = step_on(Shifted(), Hyper(), whole_batches(2), estimator="jvp", keep_train_grad=True)
    for got in run_ranks("unrolled_jobs.job_expanded_gradient", 2, tmp_path):
        assert relative(got["grad"], want["grad"]) < 1e-6
        assert relative(got["kept"], want["kept"]) < 1e-6
