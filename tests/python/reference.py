"""Independent references written plainly in Python: Philox4x32-10, the
noise z(seed, k, i) as docs/design.md defines it, and the paper's EvoGrad step
with stacked candidates."""
import math

import torch

M32 = 0xFFFFFFFF


def philox4x32_10(ctr, key):
    c0, c1, c2, c3 = ctr
    k0, k1 = key
    for _ in range(10):
        p0 = 0xD2511F53 * c0
        p1 = 0xCD9E8D57 * c2
        c0, c1, c2, c3 = ((p1 >> 32) ^ c1 ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c3 ^ k1) & M32, p0 & M32
        k0, k1 = (k0 + 0x9E3779B9) & M32, (k1 + 0xBB67AE85) & M32
    return c0, c1, c2, c3


def z(seed, k, i, noise="sign", antithetic=False):
    stream, sign = (k >> 1, -1.0 if k & 1 else 1.0) if antithetic else (k, 1.0)
    key = (seed & M32, (seed >> 32) & M32)
    if noise == "sign":  # 128 signs per call: bit i % 32 of word (i // 32) % 4
        c = i >> 7
        w = philox4x32_10((c & M32, c >> 32, stream, 0), key)
        return sign * (-1.0 if (w[(i >> 5) & 3] >> (i & 31)) & 1 else 1.0)
    q = i >> 2
    w = philox4x32_10((q & M32, q >> 32, stream, 0), key)
    lane = i & 3
    pair = lane & ~1
    u1 = (w[pair] + 0.5) / 4294967296.0
    u2 = (w[pair + 1] + 0.5) / 4294967296.0
    r = math.sqrt(-2.0 * math.log(u1))
    return sign * (r * math.cos(2 * math.pi * u2) if lane % 2 == 0 else r * math.sin(2 * math.pi * u2))


def eps_list(shapes, seed, k, sigma, dtype, noise="sign", antithetic=False):
    """eps_k for a list of shapes: sigma * z in float64, rounded once to dtype."""
    out, start = [], 0
    for shape in shapes:
        n = math.prod(shape)
        vals = [sigma * z(seed, k, start + j, noise, antithetic) for j in range(n)]
        out.append(torch.tensor(vals, dtype=torch.float64).to(dtype).reshape(shape))
        start += n
    return out


def paper_step(params, hyper, train_loss_fn, val_loss_fn, noise, temperature):
    """Stack candidates, softmax, weighted sum, backward: the paper's code."""
    base = [p.detach() for p in params]
    thetas = [[b + e for b, e in zip(base, eps)] for eps in noise]
    losses = torch.stack([train_loss_fn(t) for t in thetas])
    w = torch.softmax(-losses / temperature, 0)
    star = [sum(w[k] * thetas[k][i] for k in range(len(noise))) for i in range(len(base))]
    val = val_loss_fn(star)
    return torch.autograd.grad(val, hyper), star, losses
