"""The differentiable ops as Python ``autograd.Function``s, for torch.func.

The ops' autograd is written in C++ (``autograd.cpp``) so that TorchScript and
C++ programs differentiate them too; that is the path every ordinary call,
``torch.compile`` and ``torch.export`` take. torch.func's transforms (``grad``,
``vjp``, ``vmap``) need a ``setup_context`` and a ``vmap`` rule, which only a
Python Function can give them. The wrappers in ``ops`` route here while a
torch.func transform is active. The math is the C++ Function's: ``perturb``
and ``combine`` are the identity for ``params``, ``combine``'s ``losses``
receive ``loss_cotangent(losses, project(g))``, ``weights`` the softmax JVP.
The vmap rules call the op once per batch entry.
"""
import inspect

import torch

_ops = torch.ops.evograd


def _scalars(op: str):
    """The names of an operator's non-tensor arguments, in schema order: what
    the Functions below take first (their tensors come last, as ``*params``)."""
    args = getattr(_ops, op).default._schema.arguments
    return tuple(a.name for a in args if "Tensor" not in str(a.type))


_PERTURB, _COMBINE = _scalars("perturb"), _scalars("combine")


def transforms_active() -> bool:
    """True inside torch.func.grad / vjp / vmap (never on torch 1.x)."""
    functorch = getattr(torch._C, "_functorch", None)
    active = getattr(functorch, "_are_functorch_transforms_active", None) or \
        getattr(torch._C, "_are_functorch_transforms_active", None)
    return bool(active and active())


def _unbatched(x, dim, i):
    return x if dim is None else x.select(dim, i)


def _batch_size(in_dims, args):
    sizes = {a.shape[d] for a, d in zip(args, in_dims) if d is not None}
    return sizes.pop()


def _vmap_loop(call, in_dims, args, n_out):
    """Runs ``call`` once per batch entry and stacks outputs along dim 0."""
    size = _batch_size(in_dims, args)
    rows = [call(*[_unbatched(a, d, i) for a, d in zip(args, in_dims)]) for i in range(size)]
    outs = tuple(torch.stack([r[j] for r in rows]) for j in range(n_out))
    return outs, (0,) * n_out


class Perturb(torch.autograd.Function):
    """``params + eps_k``; the scalars first, in the schema's order."""

    @staticmethod
    def forward(seed, k, sigma, noise, antithetic, offset, *params):
        return tuple(_ops.perturb(list(params), seed, k, sigma, noise, antithetic, offset))

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, *grads):
        return (None,) * len(_PERTURB) + grads

    @staticmethod
    def vmap(info, in_dims, seed, k, sigma, noise, antithetic, offset, *params):
        def one(*ps):
            return Perturb.apply(seed, k, sigma, noise, antithetic, offset, *ps)
        return _vmap_loop(one, in_dims[len(_PERTURB):], params, len(params))


class Combine(torch.autograd.Function):
    """theta*; ``losses`` first, then the scalars in the schema's order."""

    @staticmethod
    def forward(losses, temperature, seed, sigma, noise, antithetic, offset, *params):
        return tuple(_ops.combine(list(params), losses, temperature, seed, sigma, noise,
                                  antithetic, offset))

    @staticmethod
    def setup_context(ctx, inputs, output):
        losses = inputs[0]
        ctx.save_for_backward(losses)
        ctx.args = inputs[1:1 + len(_COMBINE)]

    @staticmethod
    def backward(ctx, *grads):
        (losses,) = ctx.saved_tensors
        temperature, seed, sigma, noise, antithetic, offset = ctx.args
        d_losses = None
        if ctx.needs_input_grad[0]:
            c = _ops.project(list(grads), seed, losses.shape[0], sigma, noise, antithetic, offset)
            d_losses = _ops.loss_cotangent(losses, c, temperature)
        return (d_losses,) + (None,) * len(_COMBINE) + grads

    @staticmethod
    def vmap(info, in_dims, losses, temperature, seed, sigma, noise, antithetic, offset, *params):
        def one(l, *ps):
            return Combine.apply(l, temperature, seed, sigma, noise, antithetic, offset, *ps)
        dims = (in_dims[0],) + tuple(in_dims[1 + len(_COMBINE):])
        return _vmap_loop(one, dims, (losses,) + params, len(params))


class Weights(torch.autograd.Function):
    """softmax(-losses / temperature)."""

    @staticmethod
    def forward(losses, temperature):
        return _ops.weights(losses, temperature)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)
        ctx.temperature = inputs[1]

    @staticmethod
    def backward(ctx, grad):
        (w,) = ctx.saved_tensors
        return -(w / ctx.temperature) * (grad - (w * grad).sum()), None

    @staticmethod
    def vmap(info, in_dims, losses, temperature):
        outs, dims = _vmap_loop(lambda l: (Weights.apply(l, temperature),), in_dims[:1],
                                (losses,), 1)
        return outs[0], dims[0]


def _check_against_schemas():
    """The Functions' scalar arguments are the schemas' (a renamed or added
    argument fails at import, not as a silently shifted slice)."""
    for fn, skip, want in ((Perturb.forward, 0, _PERTURB), (Combine.forward, 1, _COMBINE)):
        names = [p.name for p in inspect.signature(fn).parameters.values()
                 if p.kind is p.POSITIONAL_OR_KEYWORD][skip:]
        if tuple(names) != want:
            raise RuntimeError(f"evograd._transforms: {fn.__qualname__} takes {names}, the schema {want}")


_check_against_schemas()
