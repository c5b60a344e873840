"""The meta-step under torch.autocast, as users train on GPUs (the CPU's
autocast here; EVOGRAD_TEST_DEVICE=cuda runs the same on a GPU, as
scripts/gpu_check.sh does), with the closures entering autocast themselves.

Reference: T1-T2 by double backward in float32 without autocast (test_jvp's
``t1t2``, on the official structures: MWN's weighting net on ``.data``
costs, LFT's FT layers inside a ReLU/max-pool ResNet, MetaXL's RTN on a
detached hidden state). "jvp" takes no difference, so half precision's
rounding enters it once, as it enters T1-T2 under the same autocast; the
tests hold it to that. "lookahead" differences gradients, which the rounding
swamps: it refuses. The paper's estimator warns when its candidates' loss
differences are within the rounding."""
import os
import warnings

import pytest
import torch

import evograd
from test_jvp import ALPHA, APPS, cos, jvp_step, metaxl, t1t2  # also puts examples/ on the path
from precision import autocast as autocast_example  # noqa: E402


DEVICE = os.environ.get("EVOGRAD_TEST_DEVICE", "cpu")


def _autocast_dtypes():
    """bfloat16 everywhere; float16 where the device's autocast has it (the
    CPU's from torch 2)."""
    out = [torch.bfloat16]
    try:
        with torch.autocast(DEVICE, dtype=torch.float16):
            pass
        out.append(torch.float16)
    except (RuntimeError, ValueError):
        pass
    return out


PRECISIONS = _autocast_dtypes()


def autocast(fn, dtype):
    def closure():
        with torch.autocast(DEVICE, dtype=dtype):
            return fn()
    return closure


def build(app):
    # MetaXL's dropout masks would differ between the passes' precisions
    if app == "metaxl":
        return metaxl(torch.float32, dropout=0.0, device=DEVICE)
    return APPS[app](torch.float32, device=DEVICE)


def relative_error(got, want):
    return float((got.double() - want.double()).norm() / want.double().norm())


@pytest.mark.parametrize("dtype", PRECISIONS, ids=str)
@pytest.mark.parametrize("app", sorted(APPS))
def test_jvp_under_autocast_is_as_exact_as_t1t2_under_it(app, dtype):
    """Both take the same derivative through the same half-precision
    operations, so each carries rounding errors of the same size: jvp's
    distance from float32's T1-T2 is held to twice T1-T2's own under the same
    autocast (plus float32's rounding, 1e-4, where T1-T2's is ~0)."""
    model, params, hyper, train, val = build(app)
    torch.manual_seed(5)
    want = t1t2(model, params, hyper, train, val)
    torch.manual_seed(5)
    try:
        official = t1t2(model, params, hyper, autocast(train, dtype), autocast(val, dtype))
    except RuntimeError:
        # torch 1.13's double backward of a convolution under CPU autocast
        # raises inside torch (a wrong channel count): the official step
        # cannot run there. jvp takes no double backward and runs.
        assert int(torch.__version__.split(".")[0]) < 2
        torch.manual_seed(5)
        got = jvp_step(model, hyper, autocast(train, dtype), autocast(val, dtype))
        assert bool(torch.isfinite(got).all()) and cos(got, want) > 0
        return
    torch.manual_seed(5)
    got = jvp_step(model, hyper, autocast(train, dtype), autocast(val, dtype))
    assert relative_error(got, want) <= 2 * relative_error(official, want) + 1e-4


@pytest.mark.parametrize("dtype", PRECISIONS, ids=str)
def test_jvp_under_autocast_meets_float32_where_half_precision_does_not_move_it(dtype):
    """MetaXL's encoder with the RTN on a detached state: under autocast,
    cosine >= 0.99 and norm within 5% of float32's T1-T2. Elsewhere half
    precision moves T1-T2 itself (docs/results.md: MWN's ResNet-32 loses a
    quarter of the norm in bfloat16, LFT's FT scales turn by cosine 0.95),
    and autocast=False is the way to float32's (the test below)."""
    model, params, hyper, train, val = build("metaxl")
    torch.manual_seed(5)
    want = t1t2(model, params, hyper, train, val)
    torch.manual_seed(5)
    got = jvp_step(model, hyper, autocast(train, dtype), autocast(val, dtype))
    assert cos(got, want) >= 0.99
    assert abs(float(got.double().norm() / want.double().norm()) - 1) <= 0.05


@pytest.mark.parametrize("dtype", PRECISIONS, ids=str)
def test_lookahead_refuses_half_precision_and_leaves_everything(dtype):
    model, params, hyper, train, val = build("mwn")
    before = [t.detach().clone() for t in list(model.parameters()) + list(model.buffers())]
    meta = evograd.EvoGrad(model, hyper, estimator="lookahead", inner_lr=ALPHA)
    for h in hyper:
        h.grad = None
    name = str(dtype).replace("torch.", "")
    with pytest.raises(ValueError, match=f"computes in {name}.*estimator='jvp'"):
        meta.step(autocast(train, dtype), autocast(val, dtype))
    assert all(h.grad is None for h in hyper)
    after = list(model.parameters()) + list(model.buffers())
    assert all(torch.equal(a, b) for a, b in zip(after, before))
    # the same step without autocast runs
    meta.step(train, val)
    assert all(h.grad is not None for h in hyper)


def mlp_problem():
    """examples/precision/autocast.py's MWN-style MLP and weighting net."""
    return autocast_example.problem(DEVICE)


def rounding_warnings(sigma, dtype, seed=0):
    model, vnet, train, val = mlp_problem()
    meta = evograd.EvoGrad(model, vnet, sigma=sigma, temperature=0.05, seed=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = meta.step(autocast(train, dtype) if dtype else train,
                           autocast(val, dtype) if dtype else val)
    spread = float(result.losses.max() - result.losses.min())
    return [str(w.message) for w in caught if "rounding" in str(w.message)], spread, result


def test_the_paper_estimator_warns_when_its_loss_differences_are_rounding():
    """bfloat16 at sigma = 1e-3: the candidates' losses differ by less than
    bfloat16's unit roundoff times the loss, and the step says so; float32
    at the same sigma, and bfloat16 at a sigma whose differences stand above
    the rounding, do not warn."""
    u = 2.0 ** -9
    found, spread, result = rounding_warnings(1e-3, torch.bfloat16)
    assert 0 < spread < u * float(result.losses.abs().max())
    assert len(found) == 1 and "bfloat16" in found[0] and "sigma" in found[0]
    assert not rounding_warnings(1e-3, None)[0]
    found, spread, result = rounding_warnings(1e-1, torch.bfloat16)
    assert spread > u * float(result.losses.abs().max()) and not found


@pytest.mark.skipif(not hasattr(torch, "amp") or not hasattr(torch.amp, "GradScaler")
                    or torch.float16 not in PRECISIONS,
                    reason="torch.amp.GradScaler on the CPU and float16 CPU autocast: torch >= 2.3")
def test_a_float16_loop_with_a_grad_scaler():
    """float16 loops scale the loss against underflow. The meta-step's
    hypergradient is linear in the validation loss, so the validation closure
    is the one to scale; the training closure stays unscaled (theta' must be
    the real inner step). The scaler's unscale_ of the meta-optimiser gives
    back the unscaled hypergradient, and its step skips on an overflow."""
    model, vnet, train, val = mlp_problem()
    hyper = list(vnet.parameters())
    meta = evograd.EvoGrad(model, vnet, estimator="jvp", inner_lr=ALPHA)
    scaler = torch.amp.GradScaler(DEVICE, init_scale=2.0 ** 10)
    meta_opt = torch.optim.SGD(hyper, lr=0.0)
    dtype = torch.float16

    meta.step(autocast(train, dtype), autocast(val, dtype))
    plain = torch.cat([h.grad.flatten() for h in hyper])
    meta_opt.zero_grad(set_to_none=True)
    meta.step(autocast(train, dtype), lambda: scaler.scale(autocast(val, dtype)()))
    scaled = torch.cat([h.grad.flatten() for h in hyper])
    assert cos(scaled, plain) > 0.999
    torch.testing.assert_close(scaled / scaler.get_scale(), plain, rtol=1e-2, atol=1e-2 * float(plain.abs().max()))
    scaler.unscale_(meta_opt)
    unscaled = torch.cat([h.grad.flatten() for h in hyper])
    torch.testing.assert_close(unscaled, scaled / scaler.get_scale())

    # An overflowing scale: lambda's gradient is not finite and the step is skipped
    meta_opt = torch.optim.SGD(hyper, lr=1.0)
    before = [h.detach().clone() for h in hyper]
    scaler = torch.amp.GradScaler(DEVICE, init_scale=2.0 ** 24)
    meta_opt.zero_grad(set_to_none=True)
    meta.step(autocast(train, dtype), lambda: scaler.scale(autocast(val, dtype)()))
    assert not all(bool(torch.isfinite(h.grad).all()) for h in hyper)
    scaler.step(meta_opt)
    scaler.update()
    assert all(torch.equal(h, b) for h, b in zip(hyper, before))
    assert scaler.get_scale() < 2.0 ** 24


def grads_of(hyper):
    return torch.cat([h.grad.flatten() for h in hyper])


@pytest.mark.parametrize("dtype", PRECISIONS, ids=str)
@pytest.mark.parametrize("app", sorted(APPS))
def test_autocast_false_runs_the_step_in_float32_whatever_the_closures_enter(app, dtype):
    """autocast=False: the closures' own torch.autocast changes nothing
    inside the step, so the hypergradient is float32's, bit for bit (and
    float32's jvp is T1-T2's, test_jvp.py)."""
    model, params, hyper, train, val = build(app)
    torch.manual_seed(5)
    want = jvp_step(model, hyper, train, val)
    torch.manual_seed(5)
    got = jvp_step(model, hyper, autocast(train, dtype), autocast(val, dtype), autocast=False)
    if DEVICE == "cpu":
        assert torch.equal(got, want)
    else:  # cuDNN's backward kernels may sum in a different order per call
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
    # Outside the step the closures' autocast holds again.
    ones = torch.ones(2, 2, device=DEVICE)
    assert autocast(lambda: torch.mm(ones, ones), dtype)().dtype == dtype


@pytest.mark.parametrize("estimator", ["lookahead", "evograd"])
def test_autocast_false_lets_every_estimator_run_as_in_float32(estimator):
    model, vnet, train, val = mlp_problem()
    hyper = list(vnet.parameters())
    options = dict(inner_lr=ALPHA) if estimator == "lookahead" else dict(sigma=1e-3, seed=3)
    results = []
    for closures in [(train, val), (autocast(train, torch.bfloat16), autocast(val, torch.bfloat16))]:
        for h in hyper:
            h.grad = None
        meta = evograd.EvoGrad(model, vnet, estimator=estimator, autocast=False, **options)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no rounding warning, no refusal
            meta.step(*closures)
        results.append(grads_of(hyper))
    assert torch.equal(results[0], results[1]) if DEVICE == "cpu" else \
        torch.allclose(results[0], results[1], rtol=1e-5, atol=1e-7)


def test_autocast_is_an_option_of_every_estimator():
    model, vnet, _, _ = mlp_problem()
    for estimator, options in [("evograd", {}), ("lookahead", dict(inner_lr=0.1)),
                               ("jvp", dict(inner_lr=0.1))]:
        assert evograd.EvoGrad(model, vnet, estimator=estimator, autocast=False,
                               **options).autocast is False


@pytest.mark.skipif(not hasattr(torch, "amp") or not hasattr(torch.amp, "GradScaler")
                    or torch.float16 not in PRECISIONS,
                    reason="torch.amp.GradScaler on the CPU and float16 CPU autocast: torch >= 2.3")
def test_the_documented_float16_loop_trains():
    """docs/api.md's loop, three iterations: one scaler for the model's and
    the meta-optimiser's steps, the validation closure scaled."""
    model, vnet, train, val = mlp_problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=ALPHA)
    meta_optimizer = torch.optim.Adam(vnet.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler(DEVICE)
    meta = evograd.EvoGrad(model, vnet, estimator="jvp", inner_lr=optimizer)
    start = [p.detach().clone() for p in list(model.parameters()) + list(vnet.parameters())]
    for _ in range(3):
        meta_optimizer.zero_grad(set_to_none=True)
        meta.step(autocast(train, torch.float16),
                  lambda: scaler.scale(autocast(val, torch.float16)()))
        scaler.step(meta_optimizer)
        loss = autocast(train, torch.float16)()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    now = list(model.parameters()) + list(vnet.parameters())
    assert all(bool(torch.isfinite(p).all()) for p in now)
    assert all(not torch.equal(p, s) for p, s in zip(now, start))


def test_jvp_says_once_that_half_precision_moves_the_hypergradient():
    """autocast unset: one warning naming the precision and the way out;
    autocast=True (meant) and float32 closures: none."""
    model, vnet, train, val = mlp_problem()

    def caught(dtype, steps=2, **options):
        meta = evograd.EvoGrad(model, vnet, estimator="jvp", inner_lr=ALPHA, **options)
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("default")  # as a user's session shows them: once
            for _ in range(steps):
                meta.step(autocast(train, dtype) if dtype else train,
                          autocast(val, dtype) if dtype else val)
        return [str(w.message) for w in got if "autocast" in str(w.message)]
    found = caught(torch.bfloat16)
    assert len(found) == 1 and "bfloat16" in found[0] and "autocast=False" in found[0]
    assert caught(torch.bfloat16, autocast=True) == []
    assert caught(None) == []
