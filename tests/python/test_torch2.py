"""PyTorch 2.x tooling through the ops: torch.library.opcheck (schema,
autograd registration, FakeTensor, AOT dispatch with dynamic shapes),
torch.compile(fullgraph=True) on aot_eager and inductor, torch.export, and
torch.func's grad and vmap. Each result is held against eager execution and
against plain PyTorch written from the formulas. Skipped on torch 1.x, which
has none of these tools."""
import pytest
import torch
from torch import nn

import evograd
from reference import eps_list

HAS_TORCH2_TOOLS = hasattr(torch, "compile") and hasattr(torch.library, "opcheck") and \
    hasattr(torch, "export") and hasattr(torch, "func")
pytestmark = pytest.mark.skipif(
    not HAS_TORCH2_TOOLS, reason=f"torch {torch.__version__} has no opcheck/compile/export/func")

ops = torch.ops.evograd
SHAPES = [(3, 4), (5,)]
SEED, SIGMA, TAU, K = 7, 0.1, 0.3, 3


def make_params(dtype=torch.float64, requires_grad=False):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(s, dtype=dtype, generator=g).requires_grad_(requires_grad) for s in SHAPES]


def make_losses(dtype=torch.float64, requires_grad=True):
    return torch.tensor([0.5, 0.2, 0.4], dtype=dtype).requires_grad_(requires_grad)


def plain_theta_star(params, losses, noise="sign"):
    """theta + sum_k softmax(-l / tau)_k eps_k, in plain PyTorch (reference noise)."""
    eps = [eps_list(SHAPES, SEED, k, SIGMA, params[0].dtype, noise) for k in range(len(losses))]
    w = torch.softmax(-losses / TAU, 0)
    return [p + sum(w[k] * eps[k][i] for k in range(len(losses))) for i, p in enumerate(params)]


def objective(star):
    return sum((s ** 3).sum() for s in star)


def samples(dtype):
    params = make_params(dtype, requires_grad=True)
    losses = make_losses(dtype)
    outs = [torch.empty_like(p).detach() for p in params]
    grads = [torch.randn_like(p).detach() for p in params]
    c = torch.tensor([0.3, -0.1, 0.2], dtype=dtype)
    return {
        "perturb": (params, SEED, 1, SIGMA, "gauss", False),
        "perturb_into": ([p.detach() for p in params], outs, SEED, 1, SIGMA, "sign", False),
        "combine": (params, losses, TAU, SEED, SIGMA, "sign", False),
        "combine_into": ([p.detach() for p in params], losses.detach(), outs, TAU, SEED, SIGMA,
                         "gauss", False),
        "weights": (losses, TAU),
        "project": (grads, SEED, K, SIGMA, "sign", False),
        "loss_cotangent": (losses.detach(), c, TAU),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["perturb", "perturb_into", "combine", "combine_into", "weights",
                                  "project", "loss_cotangent"])
def test_opcheck(name, dtype):
    torch.library.opcheck(getattr(ops, name).default, samples(dtype)[name])


def test_ops_are_tagged_pt2_compliant():
    for name in ("perturb", "perturb_into", "combine", "combine_into", "weights", "project",
                 "loss_cotangent"):
        assert torch.Tag.pt2_compliant_tag in getattr(ops, name).default.tags, name


def meta_objective(theta, lam, x, y, xv, yv):
    """The paper's functional EvoGrad step: K candidates, their losses
    (which depend on lambda), theta*, and the validation loss at theta*."""
    losses = []
    for k in range(K):
        w, b = evograd.perturb(theta, SEED, k, SIGMA)
        per_example = ((x @ w + b[:4].sum() - y) ** 2).sum(1)
        losses.append((torch.sigmoid(lam) * per_example).mean())
    w, b = evograd.combine(theta, torch.stack(losses), TAU, SEED, SIGMA)
    return ((xv @ w + b[:4].sum() - yv) ** 2).mean()


def meta_data(n):
    g = torch.Generator().manual_seed(n)
    theta = [t.detach() for t in make_params()]
    lam = torch.zeros(n, dtype=torch.float64).uniform_(-1, 1, generator=g).requires_grad_()
    x, y = torch.randn(n, 3, dtype=torch.float64, generator=g), torch.randn(n, 4, dtype=torch.float64, generator=g)
    xv, yv = torch.randn(5, 3, dtype=torch.float64, generator=g), torch.randn(5, 4, dtype=torch.float64, generator=g)
    return theta, lam, x, y, xv, yv


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
@pytest.mark.parametrize("dynamic", [False, True])
def test_compile_fullgraph_training_step_equals_eager(backend, dynamic):
    torch._dynamo.reset()
    compiled = torch.compile(meta_objective, backend=backend, fullgraph=True, dynamic=dynamic)
    for n in (8, 11):  # a second batch size: dynamic shapes must not recompile wrongly
        args = meta_data(n)
        expected = torch.autograd.grad(meta_objective(*args), args[1])[0]
        args = meta_data(n)
        value = compiled(*args)
        got = torch.autograd.grad(value, args[1])[0]
        assert torch.allclose(value, meta_objective(*meta_data(n)), rtol=1e-12, atol=0)
        assert torch.allclose(got, expected, rtol=1e-9, atol=1e-15), (got, expected)
        assert got.abs().sum() > 0


def test_compiled_ops_directly_fullgraph():
    """torch.ops.evograd.* called directly (the C++ autograd) compile too."""
    torch._dynamo.reset()

    def f(params, losses):
        return objective(torch.ops.evograd.combine(params, losses, TAU, SEED, SIGMA, "sign", False))

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    params, losses = make_params(), make_losses()
    (expected,) = torch.autograd.grad(f(params, losses), losses)
    (got,) = torch.autograd.grad(compiled(params, losses), losses)
    assert torch.allclose(got, expected, rtol=1e-12, atol=0)


class ThetaStar(nn.Module):
    def __init__(self):
        super().__init__()
        self.w, self.b = (nn.Parameter(p) for p in make_params())

    def forward(self, losses):
        return evograd.combine([self.w, self.b], losses, TAU, SEED, SIGMA)


def test_export_module_calling_combine():
    module, losses = ThetaStar(), make_losses(requires_grad=False)
    program = torch.export.export(module, (losses,))
    targets = [str(n.target) for n in program.graph.nodes if n.op == "call_function"]
    assert any("evograd.combine" in t for t in targets), targets
    other = torch.tensor([0.1, 0.9, 0.3], dtype=torch.float64)
    for got, want in zip(program.module()(other), module(other)):
        assert torch.equal(got, want)
    with torch.no_grad():
        want = plain_theta_star([module.w, module.b], other)
    for got, ref in zip(program.module()(other), want):
        assert torch.allclose(got, ref, rtol=0, atol=1e-15)


def test_func_grad_through_combine_matches_autograd_and_plain_pytorch():
    params = make_params()
    losses = make_losses(requires_grad=False)
    got = torch.func.grad(lambda l: objective(evograd.combine(params, l, TAU, SEED, SIGMA)))(losses)
    l1 = losses.clone().requires_grad_()
    (autograd,) = torch.autograd.grad(objective(evograd.combine(params, l1, TAU, SEED, SIGMA)), l1)
    l2 = losses.clone().requires_grad_()
    (plain,) = torch.autograd.grad(objective(plain_theta_star(params, l2)), l2)
    assert torch.allclose(got, autograd, rtol=1e-12, atol=0)
    assert torch.allclose(got, plain, rtol=1e-9, atol=1e-14)


def test_func_grad_through_perturb_and_weights():
    params = make_params()
    got = torch.func.grad(lambda a: objective(evograd.perturb([a, params[1]], SEED, 2, SIGMA)))(params[0])
    eps = eps_list(SHAPES, SEED, 2, SIGMA, torch.float64)
    assert torch.allclose(got, 3 * (params[0] + eps[0]) ** 2, rtol=1e-14, atol=0)
    losses = make_losses(requires_grad=False)
    v = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    got = torch.func.grad(lambda l: (evograd.weights(l, TAU) * v).sum())(losses)
    want = torch.func.grad(lambda l: (torch.softmax(-l / TAU, 0) * v).sum())(losses)
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-15)


def test_vmap_equals_a_loop():
    params = make_params()
    batch = torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.1, 0.9]], dtype=torch.float64)
    got = torch.func.vmap(lambda l: tuple(evograd.combine(params, l, TAU, SEED, SIGMA)))(batch)
    for row in range(2):
        for g, w in zip(got, evograd.combine(params, batch[row], TAU, SEED, SIGMA)):
            assert torch.equal(g[row], w)
    w = torch.func.vmap(lambda l: evograd.weights(l, TAU))(batch)
    assert torch.equal(w[1], evograd.weights(batch[1], TAU))
    stacked = torch.stack([params[0], 2 * params[0]])
    out = torch.func.vmap(lambda a: evograd.perturb([a], SEED, 1, SIGMA)[0])(stacked)
    assert torch.equal(out[1], evograd.perturb([2 * params[0]], SEED, 1, SIGMA)[0])


def test_device_formulas_equal_the_c_kernel_and_poison_non_finite_input():
    """weights/loss_cotangent for every non-CPU backend (CUDA, Meta) run in
    ATen on the tensors' device, without a host copy. Run here on CPU
    tensors by dispatching to that kernel directly."""
    keys = torch._C.DispatchKeySet(torch._C.DispatchKey.CompositeExplicitAutograd)
    losses = torch.tensor([0.3, 0.1, 0.2, 0.9], dtype=torch.float64)
    c = torch.tensor([0.5, -0.2, 0.1, 0.0], dtype=torch.float64)
    w = ops.weights.default.redispatch(keys, losses, 0.1)
    cot = ops.loss_cotangent.default.redispatch(keys, losses, c, 0.1)
    assert torch.allclose(w, ops.weights(losses, 0.1), rtol=1e-15, atol=0)
    assert torch.allclose(cot, ops.loss_cotangent(losses, c, 0.1), rtol=1e-13, atol=1e-16)
    for bad in (float("inf"), float("-inf"), float("nan")):
        l = losses.clone()
        l[1] = bad
        assert torch.isnan(ops.weights.default.redispatch(keys, l, 0.1)).all()
        assert torch.isnan(ops.loss_cotangent.default.redispatch(keys, l, c, 0.1)).all()
        assert torch.isnan(ops.loss_cotangent.default.redispatch(keys, losses, l, 0.1)).all()
    meta = torch.empty(4, dtype=torch.float32, device="meta")
    assert ops.weights(meta, 0.1).shape == (4,) and ops.weights(meta, 0.1).device.type == "meta"
    assert ops.loss_cotangent(meta, meta, 0.1).dtype == torch.float32
    with pytest.raises(ValueError, match="shape"):
        ops.loss_cotangent(meta, torch.empty(3, device="meta"), 0.1)
