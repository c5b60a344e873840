"""The operators from Python: float64 references, autograd, TorchScript,
determinism, and bad input."""
import math
import os

import pytest
import torch

import evograd
from reference import eps_list, paper_step, philox4x32_10, z

ops = torch.ops.evograd
SHAPES = [(3, 5), (0,), (7,), (2, 2, 3)]


def test_philox_known_answers():
    assert philox4x32_10((0, 0, 0, 0), (0, 0)) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    f = 0xFFFFFFFF
    assert philox4x32_10((f, f, f, f), (f, f)) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    assert philox4x32_10((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
                         (0xA4093822, 0x299F31D0)) == (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("noise,antithetic", [("sign", False), ("gauss", False), ("gauss", True)])
def test_perturb_matches_reference(dtype, noise, antithetic):
    torch.manual_seed(0)
    params = [torch.randn(s, dtype=dtype) for s in SHAPES]
    for k in (0, 1, 3):
        got = evograd.perturb(params, 2**40 + 3, k, 0.25, noise, antithetic)
        ref = eps_list(SHAPES, 2**40 + 3, k, 0.25, dtype, noise, antithetic)
        for g, p, e in zip(got, params, ref):
            assert g.shape == p.shape and g.dtype == dtype
            if noise == "sign":
                assert torch.equal(g, p + e)
            else:
                # The kernels' log/cos/sin are within 4 * 2^-53 * max(r, 1) of
                # the exact Box-Muller value (|z| < 6.7) and libm's within one
                # ulp: so up to one rounding step of dtype apart, no more.
                atol = 0.25 * 4 * 2.0**-53 * 7
                assert torch.allclose(g, p + e, rtol=torch.finfo(dtype).eps, atol=atol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_combine_weights_project_cotangent_match_reference(dtype):
    torch.manual_seed(1)
    params = [torch.randn(s, dtype=dtype) for s in SHAPES]
    losses = torch.tensor([0.3, 0.1, 0.25], dtype=torch.float64)
    tau, seed, sigma, K = 0.2, 9, 0.1, 3
    eps = [eps_list(SHAPES, seed, k, sigma, torch.float64, "gauss") for k in range(K)]
    w = torch.softmax(-losses / tau, 0)
    assert torch.allclose(evograd.weights(losses, tau), w, rtol=0, atol=1e-15)
    got = evograd.combine(params, losses, tau, seed, sigma, "gauss")
    for i, p in enumerate(params):
        ref = p.double() + sum(w[k] * eps[k][i].to(dtype).double() for k in range(K))
        scale = 1 + (ref.abs().max().item() if ref.numel() else 0.0)
        # One rounding to dtype of a float64 sum: half an ulp, with room to spare.
        assert torch.allclose(got[i].double(), ref, rtol=0, atol=torch.finfo(dtype).eps * scale)
    g = [torch.randn(s, dtype=dtype) for s in SHAPES]
    c = evograd.project(g, seed, K, sigma, "gauss")
    assert c.dtype == dtype
    c_ref = torch.tensor([sum((gi.double() * e.to(dtype).double()).sum() for gi, e in zip(g, eps[k]))
                          for k in range(K)], dtype=torch.float64)
    assert torch.allclose(c.double(), c_ref, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-5)
    cot = evograd.loss_cotangent(losses, c_ref, tau)
    assert torch.allclose(cot, -(w / tau) * (c_ref - (w * c_ref).sum()), rtol=0, atol=1e-14)


def test_combine_gradcheck_float64():
    torch.manual_seed(2)
    losses = torch.tensor([0.5, 0.2, 0.4, 0.9], dtype=torch.float64, requires_grad=True)
    a = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    for noise, anti in (("sign", False), ("gauss", True)):
        fn = lambda l, x, y: tuple(ops.combine([x, y], l, 0.3, 5, 0.2, noise, anti))
        assert torch.autograd.gradcheck(fn, (losses, a, b))
    assert torch.autograd.gradcheck(lambda l: ops.weights(l, 0.3), (losses,))
    assert torch.autograd.gradcheck(lambda x: tuple(ops.perturb([x], 1, 2, 0.1)), (a,))


def test_combine_route_equals_plain_pytorch_paper_step():
    """Same noise in both: theta* and the lambda-gradient agree to rounding."""
    torch.manual_seed(3)
    W = torch.randn(4, 3, dtype=torch.float64)
    lam = torch.tensor([0.2, -0.1], dtype=torch.float64, requires_grad=True)
    x, y = torch.randn(10, 3, dtype=torch.float64), torch.randn(10, 4, dtype=torch.float64)
    train = lambda P: ((x @ P[0].T - y) ** 2).mean() + lam[0] * (P[0] ** 2).sum() + lam[1] * P[0].sum()
    val = lambda P: ((x @ P[0].T - 1.0) ** 2).mean()
    K, tau, seed, sigma = 4, 0.5, 21, 0.05
    noise = [evograd.functional.noise([W], seed, k, sigma) for k in range(K)]
    ref_grad, ref_star, _ = paper_step([W], [lam], train, val, noise, tau)
    cands = evograd.functional.candidates([W], seed, K, sigma)
    losses = torch.stack([train(c) for c in cands])
    star = evograd.functional.combine([W], losses, tau, seed, sigma)
    grad = torch.autograd.grad(val(star), [lam])
    assert torch.allclose(star[0], ref_star[0], rtol=0, atol=1e-15)
    assert torch.allclose(grad[0], ref_grad[0], rtol=1e-12, atol=1e-15)


def test_noise_independent_of_list_split():
    flat = [torch.zeros(1000, dtype=torch.float64)]
    split = [torch.zeros(1, dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
             torch.zeros(3, 133, dtype=torch.float64), torch.zeros(0, dtype=torch.float64),
             torch.zeros(600, dtype=torch.float64)]
    a = evograd.perturb(flat, 4, 2, 1.0, "gauss")[0]
    b = torch.cat([t.reshape(-1) for t in evograd.perturb(split, 4, 2, 1.0, "gauss")])
    assert torch.equal(a, b)
    g = torch.randn(1000, dtype=torch.float64)
    pieces = [g[:1], g[1:1], g[1:400].reshape(3, 133), g[1:1], g[400:]]
    assert torch.equal(evograd.project([g], 4, 3, 1.0, "gauss"), evograd.project(pieces, 4, 3, 1.0, "gauss"))


def test_bit_identical_across_thread_counts_and_runs():
    torch.manual_seed(4)
    params = [torch.randn(300_000), torch.randn(77, 1000)]
    losses = torch.tensor([1.0, 1.1, 0.9, 1.05])
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 1):
            torch.set_num_threads(threads)
            results.append((evograd.perturb(params, 8, 1, 1e-3), evograd.combine(params, losses, 0.1, 8, 1e-3),
                            evograd.project(params, 8, 4, 1e-3, "gauss")))
    finally:
        torch.set_num_threads(old)
    for r in results[1:]:
        for x, y in zip(r[0] + r[1], results[0][0] + results[0][1]):
            assert torch.equal(x, y)
        assert torch.equal(r[2], results[0][2])


def test_non_contiguous_inputs_and_outputs_are_handled():
    torch.manual_seed(5)
    base = torch.randn(6, 8, dtype=torch.float64)
    t = base.t()  # non-contiguous
    got = evograd.perturb([t], 1, 0, 0.5)[0]
    assert torch.equal(got, t + eps_list([(6 * 8,)], 1, 0, 0.5, torch.float64)[0].reshape(8, 6))
    out = torch.empty(6, 8, dtype=torch.float64).t()
    with torch.no_grad():
        evograd.perturb_into([t], [out], 1, 0, 0.5)
    assert torch.equal(out, got)
    inplace = t.clone().t().contiguous().t()  # a fresh non-contiguous tensor
    ref = evograd.perturb([inplace], 1, 0, 0.5)[0]
    with torch.no_grad():
        evograd.perturb_into([inplace], [inplace], 1, 0, 0.5)
    assert torch.equal(inplace, ref)


def test_torchscript_save_and_load(tmp_path):
    @torch.jit.script
    def theta_star(a: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return torch.ops.evograd.combine([a], losses, 0.1, 3, 0.01, "sign", False)[0]

    class M(torch.nn.Module):
        def forward(self, a: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
            return torch.ops.evograd.combine([a], losses, 0.1, 3, 0.01, "sign", False)[0]

    a, losses = torch.randn(10), torch.tensor([0.5, 0.4], requires_grad=True)
    path = tmp_path / "m.pt"
    torch.jit.script(M()).save(str(path))
    loaded = torch.jit.load(str(path))
    eager = evograd.combine([a], losses, 0.1, 3, 0.01)[0]
    assert torch.equal(theta_star(a, losses), eager)
    out = loaded(a, losses)
    assert torch.equal(out, eager)
    out.sum().backward()
    assert losses.grad is not None and torch.isfinite(losses.grad).all()


# ---- bad input: each a clear error, nothing written ------------------------

def _out():
    return [torch.full((4,), -7.0)]


@pytest.mark.parametrize("call,err,match", [
    (lambda p, o: evograd.perturb_into(p, o, 0, 0, 0.0), ValueError, "sigma"),
    (lambda p, o: evograd.perturb_into(p, o, 0, 0, float("nan")), ValueError, "sigma"),
    (lambda p, o: evograd.perturb_into(p, o, 0, -1, 0.1), ValueError, "candidate index"),
    (lambda p, o: evograd.perturb_into(p, o, 0, 0, 0.1, "uniform"), ValueError, "unknown noise"),
    (lambda p, o: evograd.combine_into(p, torch.tensor([1.0, 2.0]), o, 0.0, 0, 0.1), ValueError, "temperature"),
    (lambda p, o: evograd.combine_into(p, torch.tensor([1.0, float("inf")]), o, 1.0, 0, 0.1), ValueError, "not finite"),
    (lambda p, o: evograd.combine_into(p, torch.tensor([1.0, 2.0, 3.0]), o, 1.0, 0, 0.1, "sign", True), ValueError, "even population"),
    (lambda p, o: evograd.combine_into(p, torch.tensor([]), o, 1.0, 0, 0.1), ValueError, "non-empty"),
    (lambda p, o: evograd.perturb_into(p, o + o, 0, 0, 0.1), ValueError, "out has 2"),
    (lambda p, o: evograd.perturb_into(p, [torch.zeros(5)], 0, 0, 0.1), ValueError, "shape"),
    (lambda p, o: evograd.perturb_into(p, [torch.zeros(4, dtype=torch.float64)], 0, 0, 0.1), TypeError, "Double"),
    (lambda p, o: evograd.perturb_into([torch.zeros(4, dtype=torch.int64)], o, 0, 0, 0.1), TypeError, "supported: float32"),
    (lambda p, o: evograd.perturb_into(p + [torch.zeros(2, dtype=torch.float64)], o + o, 0, 0, 0.1), TypeError, "share one dtype"),
    (lambda p, o: evograd.perturb_into([], [], 0, 0, 0.1), ValueError, "empty list"),
    (lambda p, o: evograd.perturb_into(p, [o[0][:1].expand(4)], 0, 0, 0.1), ValueError, "overlap"),
    (lambda p, o: evograd.perturb_into(p + [torch.ones(4)], [o[0], o[0]], 0, 0, 0.1), ValueError, "share memory"),
    (lambda p, o: evograd.perturb_into(p + [o[0]], [o[0], torch.empty(4)], 0, 0, 0.1), ValueError, "share memory"),
    (lambda p, o: evograd.perturb_into(p[0], o, 0, 0, 0.1), TypeError, "list of tensors"),
    (lambda p, o: evograd.perturb_into(p, o, 0, 0, "big"), TypeError, "sigma"),
])
def test_bad_input_raises_and_writes_nothing(call, err, match):
    params, out = [torch.ones(4)], _out()
    with torch.no_grad(), pytest.raises(err, match=match):
        call(params, out)
    assert torch.equal(out[0], torch.full((4,), -7.0))
    assert torch.equal(params[0], torch.ones(4))


def test_sharing_rules_for_outputs():
    """In place through another handle to the same elements is allowed;
    partly shared and interleaved outputs are refused, nothing written."""
    p = [torch.zeros(8), torch.zeros(3)]
    with torch.no_grad():
        evograd.perturb_into(p, [p[0][:], p[1].view(3)], 5, 0, 0.1)
    ref = evograd.perturb([torch.zeros(8), torch.zeros(3)], 5, 0, 0.1)
    assert all(torch.equal(a, b) for a, b in zip(p, ref))
    t = torch.zeros(8)
    for params, out, match in [
        ([torch.ones(4), torch.ones(4)], [t[::2], t[1::2]], r"out\[1\] and out\[0\] share memory"),
        ([t[:6]], [t[2:]], r"out\[0\] and params\[0\] share memory"),
        ([torch.ones(2), t[4:6]], [torch.zeros(2), t[3:5]], r"out\[1\] and params\[1\] share memory"),
        ([torch.ones(3), torch.ones(3)], [t[:3], t[2:5]], r"out\[1\] and out\[0\] share memory"),
    ]:
        with torch.no_grad(), pytest.raises(ValueError, match=match):
            evograd.perturb_into(params, out, 0, 0, 0.1)
        assert torch.equal(t, torch.zeros(8))


def test_bad_population_and_shapes_in_project_and_cotangent():
    g = [torch.ones(4)]
    with pytest.raises(ValueError, match="population"):
        evograd.project(g, 0, 0, 0.1)
    with pytest.raises(ValueError, match="population"):
        evograd.project(g, 0, -2, 0.1)
    with pytest.raises(ValueError, match="even population"):
        evograd.project(g, 0, 3, 0.1, "sign", True)
    with pytest.raises(ValueError, match="entries"):
        evograd.loss_cotangent(torch.ones(3), torch.ones(2), 1.0)
    with pytest.raises(ValueError, match="1-D"):
        evograd.weights(torch.ones(2, 2), 1.0)


def test_writing_into_grad_requiring_tensor_needs_no_grad():
    p = torch.ones(4, requires_grad=True)
    with pytest.raises(ValueError, match="no_grad"):
        evograd.perturb_into([p.detach()], [p], 0, 0, 0.1)
    assert torch.equal(p.detach(), torch.ones(4))


def test_library_path_override(tmp_path):
    import subprocess, sys
    env = dict(os.environ, EVOGRAD_LIBRARY=str(tmp_path / "missing.so"))
    r = subprocess.run([sys.executable, "-c", "import evograd"], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "missing.so" in r.stderr


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_meta_tensors_give_shapes_without_reading_data(dtype):
    params = [torch.empty(3, 4, dtype=dtype, device="meta"), torch.empty(5, dtype=dtype, device="meta")]
    losses = torch.empty(3, dtype=torch.float64, device="meta")
    for out in (ops.perturb(params, 1, 2, 0.1, "sign", False),
                ops.combine(params, losses, 0.2, 1, 0.1, "gauss", False)):
        assert [o.shape for o in out] == [p.shape for p in params]
        assert all(o.device.type == "meta" and o.dtype == dtype for o in out)
    c = ops.project(params, 1, 3, 0.1, "sign", False)
    assert c.shape == (3,) and c.dtype == torch.float32 and c.device.type == "meta"
    ops.perturb_into(params, [torch.empty_like(p) for p in params], 1, 0, 0.1, "sign", False)
    ops.combine_into(params, losses, [torch.empty_like(p) for p in params], 0.2, 1, 0.1, "sign", False)
    with pytest.raises(ValueError, match="shape"):
        ops.perturb_into(params, [torch.empty(2, dtype=dtype, device="meta"), params[1]], 1, 0, 0.1,
                         "sign", False)
    with pytest.raises(ValueError, match="sigma"):
        ops.combine(params, losses, 0.2, 1, -1.0, "sign", False)


def test_check_perturbable_is_the_sharing_check_the_meta_steps_use():
    a, b = torch.zeros(4), torch.zeros(3)
    lam = torch.zeros(2)
    evograd.check_perturbable([a, b], [lam])          # disjoint: passes, writes nothing
    base = torch.zeros(10)
    cases = [
        (([a, a], []), ValueError, r"params\[1\] and params\[0\] share memory"),
        (([base[:6], base[4:]], []), ValueError, r"params\[1\] and params\[0\] share memory"),
        # interleaved views: their extents cross, counted as shared (conservative)
        (([base[::2], base[1::2]], []), ValueError, r"params\[1\] and params\[0\] share memory"),
        (([a, base[2:5]], [base[:3]]), ValueError, r"params\[1\] and hyperparams\[0\] share memory"),
        (([torch.zeros(1).expand(3)], []), ValueError, r"params\[0\] has elements that overlap"),
        (([a, b.double()], []), TypeError, "share one dtype"),
        (([torch.zeros(2, dtype=torch.int64)], []), TypeError, "dtype"),
        (([], []), ValueError, "empty list"),
    ]
    for (params, hyper), err, match in cases:
        with pytest.raises(err, match=match):
            evograd.check_perturbable(params, hyper)
    # The same sweep as perturb_into's check: what it refuses, that refuses.
    with pytest.raises(ValueError, match="share memory"):
        ops.perturb_into([a, a], [a, a], 0, 0, 0.1, "sign", False)


def test_python_wrappers_take_the_schemas_arguments():
    """The operators' signatures are written once, in schemas.cpp: each
    Python wrapper takes the same arguments, in order, with the same defaults."""
    import inspect
    # The one deliberate difference: Python checks a parameter list alone.
    python_defaults = {("check_perturbable", "hyperparams"): ()}
    for name in ("perturb", "perturb_into", "combine", "combine_into", "weights", "project",
                 "loss_cotangent", "check_perturbable"):
        schema = getattr(torch.ops.evograd, name).default._schema
        params = list(inspect.signature(getattr(evograd, name)).parameters.values())
        assert [p.name for p in params] == [a.name for a in schema.arguments], name
        for p, a in zip(params, schema.arguments):
            want = inspect.Parameter.empty if a.default_value is None else a.default_value
            assert p.default == python_defaults.get((name, p.name), want), (name, p.name)
