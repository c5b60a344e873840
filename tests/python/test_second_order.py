"""Forward-mode tangents differentiated once more (evograd.second_order)
against double backward, function by function, in float64.

Each case is a loss l(theta, lambda) where lambda acts before the function,
so that the function's second derivatives enter
grad_lambda (u . grad_theta l); both ways of computing it must agree to
rounding (1e-10 relative in float64)."""
import contextlib

import pytest
import torch
from torch.autograd import forward_ad
from torch.nn import functional as F

from evograd import second_order, tangents

D = torch.float64


def by_double_backward(loss_fn, theta, lam, u):
    theta = theta.detach().requires_grad_()
    g, = torch.autograd.grad(loss_fn(theta, lam), theta, create_graph=True)
    return torch.autograd.grad((g * u).sum(), lam)[0]


def by_tangents(loss_fn, theta, lam, u, safe=True):
    with forward_ad.dual_level():
        mode = second_order.second_order_safe() if safe else contextlib.nullcontext()
        with mode:
            loss = loss_fn(forward_ad.make_dual(theta.detach(), u), lam)
        t = tangents.tangent(loss)
    return torch.autograd.grad(t, lam)[0]


def features(theta, lam, shape):
    """lambda-scaled inputs times theta: both reach the function under test."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(shape[0], theta.shape[0], generator=g, dtype=D)
    return (x * lam[: theta.shape[0]]) @ theta.reshape(theta.shape[0], -1)


def weights_of(out):
    g = torch.Generator().manual_seed(2)
    return torch.randn(out.shape, generator=g, dtype=D)


def scalar(out):
    """A loss with nonzero second derivatives in out."""
    return (weights_of(out) * out).sum() + (out ** 2).sum() * 0.3 + out.tanh().sum()


def fixed(*shape, low=0.5):
    g = torch.Generator().manual_seed(sum(shape) + 7)
    return torch.rand(*shape, generator=g, dtype=D) + low


def attention(q, k, v, mask=None):
    """SDPA written out: double backward through torch's fused CPU kernel is
    not implemented, so the reference differentiates this."""
    s = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    return torch.softmax(s, -1) @ v


CASES = {
    "batch_norm_train": lambda h: F.batch_norm(h.reshape(6, 4, 3), torch.zeros(4, dtype=D),
                                               torch.ones(4, dtype=D), training=True),
    "batch_norm_no_stats": lambda h: F.batch_norm(h.reshape(6, 4, 3), None, None, training=True),
    "batch_norm_eval": lambda h: F.batch_norm(h.reshape(6, 4, 3), fixed(4, low=-0.5), fixed(4),
                                              training=False),
    "instance_norm": lambda h: F.instance_norm(h.reshape(6, 4, 3)),
    "torch_batch_norm": lambda h: torch.batch_norm(h.reshape(6, 4, 3), fixed(4), fixed(4, low=0.0),
                                                   None, None, True, 0.1, 1e-5, False),
    "torch_instance_norm": lambda h: torch.instance_norm(h.reshape(6, 4, 3), None, None, None,
                                                         None, True, 0.1, 1e-5, False),
    "torch_layer_norm": lambda h: torch.layer_norm(h, (12,), None, None, 1e-5, False),
    "torch_group_norm": lambda h: torch.group_norm(h.reshape(6, 4, 3), 2, None, None, 1e-5, False),
    "layer_norm": lambda h: F.layer_norm(h, (12,), torch.linspace(0.5, 2, 12, dtype=D),
                                         torch.linspace(-1, 1, 12, dtype=D)),
    "group_norm": lambda h: F.group_norm(h.reshape(6, 4, 3), 2, fixed(4), fixed(4, low=-0.5)),
    "log_softmax": lambda h: F.log_softmax(h, dim=1),
    "log_softmax_method": lambda h: h.log_softmax(-1),
    "torch_log_softmax": lambda h: torch.log_softmax(h, 1),
    "logsumexp": lambda h: torch.logsumexp(h, 1),
    "logsumexp_method": lambda h: h.logsumexp(dim=1, keepdim=True),
    "softmax": lambda h: F.softmax(h, dim=1),
    "softmax_method": lambda h: h.softmax(0),
    "torch_softmax": lambda h: torch.softmax(h, -1),
    "relu_maxpool": lambda h: F.max_pool1d(F.relu(h).reshape(6, 1, 12), 3, 2),
    "max_pool2d": lambda h: F.max_pool2d(h.reshape(6, 1, 3, 4), 2, 1),
    "gelu": lambda h: F.gelu(h),
    "sigmoid_softplus": lambda h: torch.sigmoid(F.softplus(h)),
    "adaptive_avg_pool": lambda h: F.adaptive_avg_pool2d(h.reshape(6, 3, 2, 2), 1),
}
if hasattr(F, "rms_norm"):  # torch >= 2.4
    CASES["rms_norm"] = lambda h: F.rms_norm(h, (12,), torch.linspace(0.5, 2, 12, dtype=D))

# Written out in the reference (attention above), called fused by the pass.
ATTENTION = {
    "plain": (dict(), None),
    "causal": (dict(is_causal=True), torch.ones(3, 3, dtype=torch.bool).tril()),
    "bool_mask": (dict(attn_mask=torch.tensor([[1, 0, 1]] * 3, dtype=torch.bool)),
                  torch.tensor([[1, 0, 1]] * 3, dtype=torch.bool)),
    "float_mask": (dict(attn_mask=fixed(3, 3, low=-1.0)), fixed(3, 3, low=-1.0)),
}

LOSSES = {
    "cross_entropy": lambda h, y: F.cross_entropy(h, y),
    "cross_entropy_sum": lambda h, y: F.cross_entropy(h, y, reduction="sum"),
    "cross_entropy_none": lambda h, y: F.cross_entropy(h, y, reduction="none").pow(2).sum(),
    "cross_entropy_weight": lambda h, y: F.cross_entropy(h, y, weight=torch.linspace(
        0.5, 2, 12, dtype=D)),
    "cross_entropy_ignore": lambda h, y: F.cross_entropy(h, torch.where(y == 3, -100, y)),
    "cross_entropy_smoothing": lambda h, y: F.cross_entropy(h, y, label_smoothing=0.2),
    "cross_entropy_probabilities": lambda h, y: F.cross_entropy(h, F.softmax(
        weights_of(h), 1)),
    "nll_of_log_softmax": lambda h, y: F.nll_loss(F.log_softmax(h, 1), y),
}


def problem():
    g = torch.Generator().manual_seed(0)
    theta = torch.randn(5, 12, generator=g, dtype=D) * 0.5
    lam = (torch.rand(8, generator=g, dtype=D) + 0.5).requires_grad_()
    u = torch.randn(5, 12, generator=g, dtype=D)
    return theta, lam, u


def agree(loss_fn):
    theta, lam, u = problem()
    want = by_double_backward(loss_fn, theta, lam, u)
    got = by_tangents(loss_fn, theta, lam, u)
    assert want.norm() > 0
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * float(want.norm()))
    return theta, lam, u, want


@pytest.mark.parametrize("name", sorted(CASES))
def test_function_second_order_equals_double_backward(name):
    agree(lambda theta, lam: scalar(CASES[name](features(theta, lam, (6,)))))


def test_attention_second_order_equals_double_backward():
    """F.scaled_dot_product_attention (torch >= 2.0) in each masking form,
    and nn.MultiheadAttention (every version: it calls the former where
    there is one)."""
    theta, lam, u = problem()

    def qkv(theta, lam):
        h = features(theta, lam, (6,)).reshape(2, 3, 3, 4)
        return h, h * 0.5 + 0.1, h.tanh()
    fused = getattr(F, "scaled_dot_product_attention", None)
    assert fused is not None or torch.__version__ < "2"
    for name, (kwargs, mask) in (ATTENTION.items() if fused is not None else ()):
        want = by_double_backward(lambda t, l: scalar(attention(*qkv(t, l), mask)), theta, lam, u)
        got = by_tangents(lambda t, l: scalar(fused(*qkv(t, l), **kwargs)), theta, lam, u)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * float(want.norm()), msg=name)

    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(4, 2, batch_first=True).double()
    inner = mha.in_proj_weight.detach()

    def through_mha(theta, lam, written_out):
        h = features(theta, lam, (6,)).reshape(6, 3, 4)
        if not written_out:
            return scalar(mha(h, h, h, need_weights=False)[0])
        q, k, v = (h @ w.T for w in inner.chunk(3))
        heads = [attention(q[..., i:i + 2], k[..., i:i + 2], v[..., i:i + 2]) for i in (0, 2)]
        return scalar(torch.cat(heads, -1) @ mha.out_proj.weight.detach().T)
    with torch.no_grad():
        mha.in_proj_bias.zero_()
        mha.out_proj.bias.zero_()
    want = by_double_backward(lambda t, l: through_mha(t, l, True), theta, lam, u)
    got = by_tangents(lambda t, l: through_mha(t, l, False), theta, lam, u)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10 * float(want.norm()))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_second_order_equals_double_backward(name):
    y = torch.arange(6) % 12

    def loss_fn(theta, lam):
        return LOSSES[name](features(theta, lam, (6,)), y)
    agree(loss_fn)


def test_the_rewrites_are_needed():
    """Without them, batch_norm's tangent uses its saved statistics as
    constants: the lambda-gradient is silently different (the reason the
    step runs the pass inside second_order_safe)."""
    def loss_fn(theta, lam):
        return scalar(CASES["batch_norm_train"](features(theta, lam, (6,))))
    theta, lam, u, want = agree(loss_fn)
    plain = by_tangents(loss_fn, theta, lam, u, safe=False)
    assert (plain - want).norm() > 1e-3 * want.norm()


def test_batch_norm_statistics_move_as_torch_moves_them():
    g = torch.Generator().manual_seed(3)
    h = torch.randn(6, 4, 3, generator=g, dtype=D).requires_grad_()
    mean, var = torch.zeros(4, dtype=D), torch.ones(4, dtype=D)
    mean2, var2 = mean.clone(), var.clone()
    F.batch_norm(h, mean, var, training=True, momentum=0.3)
    with second_order.second_order_safe():
        F.batch_norm(h, mean2, var2, training=True, momentum=0.3)
    torch.testing.assert_close(mean2, mean, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(var2, var, rtol=1e-14, atol=1e-15)


def test_values_match_torch_to_rounding():
    """The rewrites' values (they run where an argument requires grad)."""
    theta, lam, _ = problem()
    h = features(theta, lam, (6,)).detach().requires_grad_()
    y = torch.arange(6) % 12
    for name, fn in CASES.items():
        with second_order.second_order_safe():
            got = fn(h)
        torch.testing.assert_close(got, fn(h), rtol=1e-12, atol=1e-12, msg=name)
    for name, fn in LOSSES.items():
        with second_order.second_order_safe():
            got = fn(h, y)
        torch.testing.assert_close(got, fn(h, y), rtol=1e-12, atol=1e-12, msg=name)


def test_calls_that_do_not_depend_on_lambda_keep_torch_s_function():
    """Nothing requires grad: torch's own (fused) function runs, whose
    forward-mode formula is exact where no reverse pass follows."""
    from unittest import mock

    def rewritten(*args, **kwargs):
        raise LookupError("the rewrite ran")
    h = torch.randn(6, 12, dtype=D)
    with mock.patch.object(second_order, "_REWRITES", {F.layer_norm: rewritten}):
        with second_order.second_order_safe():
            F.layer_norm(h, (12,))
        with pytest.raises(LookupError):
            with second_order.second_order_safe():
                F.layer_norm(h.requires_grad_(), (12,))


def test_a_parameter_held_outside_the_module_is_an_error():
    w = torch.randn(3, 3, dtype=D)
    with pytest.raises(ValueError, match="did not read from the model's modules"):
        with second_order.second_order_safe([w]):
            (w @ torch.ones(3, dtype=D)).sum()
    with second_order.second_order_safe([w]):  # detaching it is what T1-T2 does too
        w.detach().sum()
