"""The torch functions whose forward-mode formulas autograd cannot
differentiate again, written in operations it can, for the "jvp"
estimator's tangent pass (tangents.py puts the tangents on).

Reverse mode over a forward-mode formula is exact only where the formula is
written in differentiable operations. A few of torch's are not:

* ``batch_norm`` (with batch statistics), ``layer_norm``, ``group_norm``
  and ``instance_norm`` compute their tangent from the saved mean and
  inverse standard deviation, outputs autograd does not differentiate: the
  lambda-gradient silently misses their dependence on lambda (a ResNet with
  FT layers: cosine 0.96 with T1-T2 instead of 1);
* ``log_softmax``, ``softmax``, ``logsumexp`` (and ``cross_entropy``
  through them) write into a saved intermediate: the backward raises;
* ``scaled_dot_product_attention``'s fused CPU kernels have no derivative of
  their backward: it runs written out (matmul, softmax, matmul).

Inside ``second_order_safe()`` those calls are written in differentiable
operations instead; everything else runs as torch wrote it. A function mode
does not see the calls torch's own Python functions make (
``multi_head_attention_forward`` calls ``scaled_dot_product_attention``), so
while one of those runs, ``torch.nn.functional``'s rewritten names point at
the rewrites too. A call none of whose arguments requires grad (nothing
upstream of it depends on lambda) keeps torch's own function: the reverse
pass never goes through it.
``tests/python/test_second_order.py`` holds each function, and the networks of
MWN, LFT and MetaXL, to double backward.
"""
import contextlib
from typing import List, Sequence

import torch
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode


# torch's own, for the rewrites that fall back to them (the module's names
# are pointed at the rewrites while a functional composite runs).
_ORIGINAL = {name: getattr(F, name) for name in ("batch_norm", "instance_norm", "dropout")}


def _reduce_dims(x: torch.Tensor, keep: int) -> List[int]:
    return [d for d in range(x.dim()) if d != keep]


def _normalize(x, dims, eps):
    mean = x.mean(dims, keepdim=True)
    centred = x - mean
    var = (centred * centred).mean(dims, keepdim=True)
    return centred * torch.rsqrt(var + eps), mean, var


def _affine(y, weight, bias, shape):
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    if not training and running_mean is not None and running_var is not None:
        return _ORIGINAL["batch_norm"](input, running_mean, running_var, weight, bias, False,
                                       momentum, eps)
    dims = _reduce_dims(input, 1)
    y, mean, var = _normalize(input, dims, eps)
    if training and running_mean is not None:
        # The statistics move as F.batch_norm moves them (unbiased variance).
        with torch.no_grad():
            n = input.numel() // input.shape[1]
            running_mean.mul_(1 - momentum).add_(momentum * mean.reshape(-1).detach())
            running_var.mul_(1 - momentum).add_(
                momentum * n / max(n - 1, 1) * var.reshape(-1).detach())
    shape = [1, -1] + [1] * (input.dim() - 2)
    return _affine(y, weight, bias, shape)


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    if not use_input_stats:
        return _ORIGINAL["instance_norm"](input, running_mean, running_var, weight, bias, False,
                                          momentum, eps)
    if running_mean is not None or running_var is not None:
        raise ValueError("estimator='jvp': instance_norm with running statistics "
                         "(track_running_stats=True) is not supported in the tangent pass")
    y, _, _ = _normalize(input, list(range(2, input.dim())), eps)
    return _affine(y, weight, bias, [1, -1] + [1] * (input.dim() - 2))


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    dims = list(range(input.dim() - len(normalized_shape), input.dim()))
    y, _, _ = _normalize(input, dims, eps)
    if weight is not None:
        y = y * weight
    return y + bias if bias is not None else y


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    n, c = input.shape[:2]
    grouped = input.reshape(n, num_groups, -1)
    y, _, _ = _normalize(grouped, [2], eps)
    return _affine(y.reshape(input.shape), weight, bias, [1, -1] + [1] * (input.dim() - 2))


def logsumexp(input, dim, keepdim=False):
    # The shift is a constant: it cancels in value and in every derivative.
    shift = input.detach().amax(dim, keepdim=True)
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    out = (input - shift).exp().sum(dim, keepdim=True).log() + shift
    return out if keepdim else out.squeeze(dim) if isinstance(dim, int) else \
        out.reshape([s for d, s in enumerate(out.shape) if d not in _dims(dim, input.dim())])


def _dims(dim, ndim):
    return {d % ndim for d in (dim if isinstance(dim, (list, tuple)) else [dim])}


def log_softmax(input, dim=None, _stacklevel=3, dtype=None):
    if dtype is not None:
        input = input.to(dtype)
    if dim is None:
        dim = 0 if input.dim() in (0, 1, 3) else 1  # F.log_softmax's implicit choice
    return input - logsumexp(input, dim, keepdim=True)


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100,
                  reduce=None, reduction="mean", label_smoothing=0.0):
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    logp = log_softmax(input, 1 if input.dim() > 1 else 0)
    if target.is_floating_point():  # class probabilities
        if label_smoothing > 0:
            classes = input.shape[1 if input.dim() > 1 else 0]
            target = target * (1 - label_smoothing) + label_smoothing / classes
        w = 1.0 if weight is None else weight.reshape([-1] + [1] * (input.dim() - 2))
        loss = -(logp * target * w).sum(1 if input.dim() > 1 else 0)
        if reduction == "mean":
            return loss.sum() / (input.shape[0] if input.dim() > 1 else 1)
        return loss.sum() if reduction == "sum" else loss
    nll = F.nll_loss(logp, target, weight, ignore_index=ignore_index, reduction=reduction)
    if label_smoothing <= 0:
        return nll
    if weight is not None:
        raise ValueError("estimator='jvp': cross_entropy with both weight= and "
                         "label_smoothing= is not supported in the tangent pass")
    classes = input.shape[1 if input.dim() > 1 else 0]
    smooth = -logp.sum(1 if input.dim() > 1 else 0)
    keep = target != ignore_index
    smooth = smooth * keep
    if reduction == "mean":
        smooth = smooth.sum() / keep.sum()
    elif reduction == "sum":
        smooth = smooth.sum()
    return (1 - label_smoothing) * nll + label_smoothing / classes * smooth


def softmax(input, dim=None, _stacklevel=3, dtype=None):
    return log_softmax(input, dim, dtype=dtype).exp()


def _method_softmax(self, dim=None, dtype=None):
    return softmax(self, dim, dtype=dtype)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0,
                                 is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa:  # keys and values shared by groups of query heads
        repeat = query.shape[-3] // key.shape[-3]
        key = key.repeat_interleave(repeat, -3)
        value = value.repeat_interleave(repeat, -3)
    scores = query @ key.transpose(-2, -1) * (
        scale if scale is not None else query.shape[-1] ** -0.5)
    if is_causal:
        keep = torch.ones(scores.shape[-2:], dtype=torch.bool, device=scores.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool \
            else scores + attn_mask
    weights = softmax(scores, -1)
    if dropout_p > 0:
        weights = _ORIGINAL["dropout"](weights, dropout_p)
    return weights @ value


def _method_log_softmax(self, dim=None, dtype=None):
    return log_softmax(self, dim, dtype=dtype)


def _logsumexp(input, dim, keepdim=False, *, out=None):
    if out is not None:
        raise ValueError("estimator='jvp': logsumexp(out=) is not supported in the tangent pass")
    return logsumexp(input, dim, keepdim)


def _torch_batch_norm(input, weight, bias, running_mean, running_var, training, momentum, eps,
                      cudnn_enabled=True):
    return batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)


def _torch_instance_norm(input, weight, bias, running_mean, running_var, use_input_stats,
                         momentum, eps, cudnn_enabled=True):
    return instance_norm(input, running_mean, running_var, weight, bias, use_input_stats,
                         momentum, eps)


def _torch_layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5,
                      cudnn_enable=True):
    return layer_norm(input, normalized_shape, weight, bias, eps)


def _torch_group_norm(input, num_groups, weight=None, bias=None, eps=1e-5, cudnn_enabled=True):
    return group_norm(input, num_groups, weight, bias, eps)


# torch.* spellings too: code that calls them directly would otherwise
# reach the same formulas.
_REWRITES = {
    torch.batch_norm: _torch_batch_norm, torch.instance_norm: _torch_instance_norm,
    torch.layer_norm: _torch_layer_norm, torch.group_norm: _torch_group_norm,
    F.batch_norm: batch_norm, F.instance_norm: instance_norm, F.layer_norm: layer_norm,
    F.group_norm: group_norm, F.log_softmax: log_softmax, F.cross_entropy: cross_entropy,
    torch.log_softmax: log_softmax, torch.Tensor.log_softmax: _method_log_softmax,
    torch.logsumexp: _logsumexp, torch.Tensor.logsumexp: _logsumexp,
    F.softmax: softmax, torch.softmax: softmax, torch.Tensor.softmax: _method_softmax,
}
if hasattr(F, "scaled_dot_product_attention"):  # torch >= 2.0
    _REWRITES[F.scaled_dot_product_attention] = scaled_dot_product_attention
if hasattr(F, "rms_norm"):  # torch >= 2.4
    def rms_norm(input, normalized_shape, weight=None, eps=None):
        dims = list(range(input.dim() - len(normalized_shape), input.dim()))
        eps = torch.finfo(input.dtype).eps if eps is None else eps
        y = input * torch.rsqrt((input * input).mean(dims, keepdim=True) + eps)
        return y * weight if weight is not None else y
    _REWRITES[F.rms_norm] = rms_norm

# torch's Python functions that call rewritten names inside (a function
# mode does not see those calls): the names are pointed at the rewrites
# while they run.
_COMPOSITES = {F.multi_head_attention_forward}

# The names in torch.nn.functional that its own composites look up.
_FUNCTIONAL = {name: _REWRITES[getattr(F, name)] for name in dir(F)
               if callable(getattr(F, name, None)) and getattr(F, name) in _REWRITES}


@contextlib.contextmanager
def _functional_rewritten():
    saved = {name: getattr(F, name) for name in _FUNCTIONAL}
    try:
        for name, rewrite in _FUNCTIONAL.items():
            setattr(F, name, rewrite)
        yield
    finally:
        for name, original in saved.items():
            setattr(F, name, original)


_DETACHING = {torch.Tensor.detach, torch.Tensor.detach_, torch.Tensor.data.__get__,
              torch.Tensor.requires_grad.__get__, torch.Tensor.grad.__get__}


class second_order_safe(TorchFunctionMode):
    """Within the block, the calls listed in this module's docstring run in
    differentiable operations (same values to rounding). A call given one
    of ``originals`` (a parameter the closure holds on its own, not read from
    the module whose attributes carry the tangents) raises: it would be a
    constant where T1-T2 differentiates it."""

    def __init__(self, originals: Sequence[torch.Tensor] = ()):
        super().__init__()
        self.originals = {id(t) for t in originals}

    def _check(self, func, args, kwargs):
        for a in list(args) + list(kwargs.values()):
            for t in (a if isinstance(a, (list, tuple)) else (a,)):
                if isinstance(t, torch.Tensor) and id(t) in self.originals:
                    raise ValueError(
                        "estimator='jvp': the training closure used a perturbed parameter "
                        f"(in {getattr(func, '__name__', func)}) that it did not read from the "
                        "model's modules, so it carries no tangent and the hypergradient would "
                        "miss its part. Read parameters through the model during the closure "
                        "(model.layer.weight), not from a reference taken before the step")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.originals and func not in _DETACHING:
            self._check(func, args, kwargs)
        rewrite = _REWRITES.get(func)
        if rewrite is not None and _depends_on_lambda(args, kwargs):
            return rewrite(*args, **kwargs)
        if func in _COMPOSITES:
            with _functional_rewritten():
                return func(*args, **kwargs)
        return func(*args, **kwargs)


def _depends_on_lambda(args, kwargs) -> bool:
    """Whether a tensor argument requires grad. In the tangent pass only
    lambda does (the parameters do not): torch's own formula is exact for a
    call the reverse pass never goes through, and faster."""
    for a in list(args) + list(kwargs.values()):
        for t in (a if isinstance(a, (list, tuple)) else (a,)):
            if isinstance(t, torch.Tensor) and t.requires_grad:
                return True
    return False
