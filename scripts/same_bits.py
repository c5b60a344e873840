"""A digest of every number EvoGrad.step produces: 3 steps in each of 20
configurations (float32 and float64; sign, gauss and antithetic noise, K = 3,
scale="t1t2", common random numbers, nonfinite="drop", the consecutive seed
schedule, the lookahead estimator with and without fd_step), hashing every
loss, weight, lambda-gradient, parameter and buffer.

Run it on two checkouts of the Python package, on one build of the
operators, to show that a change of the meta-step kept every bit:

    EVOGRAD_LIBRARY=build/main/libevograd_ops.so PYTHONPATH=<checkout>/torch_ops \
        OMP_NUM_THREADS=1 .venv/bin/python scripts/same_bits.py
"""
import hashlib
import warnings

import torch
from torch import nn

import evograd

warnings.simplefilter("ignore")  # the collapse and buffer warnings of some configurations
torch.use_deterministic_algorithms(True)
h = hashlib.sha256()
rows = []


def feed(name, *tensors):
    for t in tensors:
        if t is None:
            continue
        b = t.detach().contiguous().cpu().numpy().tobytes()
        h.update(b)
    rows.append(name)


def problem(dtype):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 3)).to(dtype)
    w = torch.zeros(32, dtype=dtype, requires_grad=True)
    decay = torch.tensor([-3.0], dtype=dtype, requires_grad=True)
    x, y = torch.randn(32, 6, dtype=dtype), torch.randint(0, 3, (32,))
    xv, yv = torch.randn(24, 6, dtype=dtype), torch.randint(0, 3, (24,))

    def train():
        per = nn.functional.cross_entropy(model(x), y, reduction="none")
        return (torch.sigmoid(w) * per).mean() + decay.exp().sum() * sum((p ** 2).sum() for p in model.parameters())

    def val():
        return nn.functional.cross_entropy(model(xv), yv)
    return model, [w, decay], train, val


configs = [dict(), dict(noise="gauss"), dict(population=4, antithetic=True), dict(population=3, temperature=0.5),
           dict(scale="t1t2", inner_lr=0.1), dict(common_random_numbers=True, population=3),
           dict(nonfinite="drop", population=3), dict(seed_schedule="consecutive"),
           dict(estimator="lookahead", inner_lr=0.05), dict(estimator="lookahead", inner_lr=0.05, fd_step=1e-3)]
for dtype in (torch.float32, torch.float64):
    for i, cfg in enumerate(configs):
        model, hyper, train, val = problem(dtype)
        model.train()
        meta = evograd.EvoGrad(model, hyper, seed=7, **{"sigma": 1e-2, **cfg})
        for step in range(3):
            torch.manual_seed(100 + step)
            r = meta.step(train, val)
            feed(f"{dtype}-{i}-{step}", r.losses, r.weights, torch.tensor([r.val_loss]), *[p.grad for p in hyper],
                 *model.parameters(), *model.buffers())
        feed(f"{dtype}-{i}-state", torch.tensor([meta.state_dict()["seed"], meta.state_dict()["steps_taken"]]))
print(len(rows), h.hexdigest())
