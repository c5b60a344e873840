"""What each rank runs in test_unrolled_ranks.py: T1-T2's estimators ("jvp",
"lookahead") with parallel="data" on gloo ranks, plain and under DDP.
Models, data and losses are distributed_jobs.py's (float64, no batch
statistics), so that the ranks' mean is one step on the whole batch."""
import torch
import torch.distributed as dist
from torch import nn

import evograd
from distributed_jobs import (Hyper, counting_hook, make_data, make_model, shard, step_after_drift,
                              train_loss, val_loss)

ESTIMATORS = ("jvp", "lookahead")
LR = 0.1


def whole_batches(world):
    return make_data(6 * world, 1), make_data(3 * world, 2)


def step_on(model, hyper, batches, **options):
    """One step; lambda's gradient, the parameters' .grad (flat; empty if
    none), the result and the EvoGrad."""
    (x, y), (xv, yv) = batches
    meta = evograd.EvoGrad(model, hyper, inner_lr=LR, seed=4, **options)
    coll = meta.exchange.collectives
    bytes_before, calls_before = (coll.bytes_sent, coll.calls) if coll else (0, 0)
    r = meta.step(lambda: train_loss(model, hyper, x, y), lambda: val_loss(model, hyper, xv, yv))
    grads = [p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]
    return {"grad": torch.cat([p.grad.reshape(-1) for p in hyper.parameters()]),
            "kept": torch.cat(grads) if grads else torch.zeros(0, dtype=torch.float64),
            "losses": r.losses, "val": r.val_loss, "tensor": r.val_loss_tensor,
            "bytes": coll.bytes_sent - bytes_before if coll else 0,
            "calls": coll.calls - calls_before if coll else 0}, meta


def estimators_on(world):
    """Both estimators on 2 ranks; the recommended one on more."""
    return ESTIMATORS if world == 2 else ("jvp",)


def reference(world):
    """Each estimator's step in this process on the whole batch."""
    return {e: step_on(make_model(), Hyper(), whole_batches(world), estimator=e,
                       keep_train_grad=True)[0] for e in estimators_on(world)}


def job_unrolled_data_step(rank, world):
    """Each estimator on this rank's shard, plain and DDP-wrapped, with the
    bytes one step sends and how often DDP's own reduction ran inside it."""
    (x, y), (xv, yv) = whole_batches(world)
    mine = ((shard(x, rank, world), shard(y, rank, world)),
            (shard(xv, rank, world), shard(yv, rank, world)))
    out = {}
    for e in estimators_on(world):
        for wrapped in (False, True):
            model, hyper = make_model(), Hyper()
            net, hook = model, {"calls": 0}
            if wrapped:
                net = nn.parallel.DistributedDataParallel(model)
                net.register_comm_hook(hook, counting_hook)
            got, _ = step_on(net, hyper, mine, estimator=e, parallel="data",
                             keep_train_grad=True)
            got["ddp_calls"] = hook["calls"]
            got["restored"] = all(torch.equal(p, q) for p, q in
                                  zip(model.parameters(), make_model().parameters()))
            out[e, wrapped] = got
    return out


def job_one_step_training(rank, world, iterations=12):
    """The MWN loop with one training pass per iteration: the meta-step
    leaves the inner gradient (the ranks' mean) in .grad and the model's
    optimiser steps on it; the replicas must stay bit-identical, and DDP's
    own reduction never runs."""
    model, hyper = make_model(), Hyper()
    ddp = nn.parallel.DistributedDataParallel(model)
    hook = {"calls": 0}
    ddp.register_comm_hook(hook, counting_hook)
    meta = evograd.EvoGrad(ddp, hyper, estimator="jvp", inner_lr=LR, parallel="data",
                           keep_train_grad=True, check_replicas=True, seed=5)
    opt = torch.optim.SGD(ddp.parameters(), lr=LR, momentum=0.9)
    hopt = torch.optim.Adam(hyper.parameters(), lr=1e-2)
    for it in range(iterations):
        (x, y), (xv, yv) = make_data(8 * world, 100 + it), make_data(4 * world, 200 + it)
        x, y, xv, yv = (shard(t, rank, world) for t in (x, y, xv, yv))
        opt.zero_grad(set_to_none=True)
        hopt.zero_grad()
        meta.step(lambda: train_loss(ddp, hyper, x, y), lambda: val_loss(ddp, hyper, xv, yv))
        hopt.step()
        opt.step()
    return {"params": [p.detach().clone() for p in model.parameters()],
            "hyper": [h.detach().clone() for h in hyper.parameters()],
            "ddp_calls": hook["calls"]}


def job_unrolled_failures(rank, world):
    """Errors on one rank are errors on every rank, in each of the three
    phases (the inner pass, the validation pass, the pass through theta'),
    and the model is put back; ranks built differently, or drifted apart,
    are refused as with the paper's estimator."""
    out = {}
    model, hyper = make_model(), Hyper()
    (x, y), (xv, yv) = make_data(8, 1), make_data(4, 2)
    before = [p.detach().clone() for p in model.parameters()]

    def failing(phase, when):
        calls = {"train": 0}

        def train():
            calls["train"] += 1
            if rank == 1 and phase == "train" and calls["train"] == when:
                raise RuntimeError("closure failed on purpose")
            return train_loss(model, hyper, x, y)

        def val():
            if rank == 1 and phase == "val":
                raise RuntimeError("closure failed on purpose")
            return val_loss(model, hyper, xv, yv)
        return train, val

    for e in ESTIMATORS:
        meta = evograd.EvoGrad(model, hyper, estimator=e, inner_lr=LR, parallel="data")
        for name, phase, when in (("inner", "train", 1), ("val", "val", 0),
                                  ("through", "train", 2)):
            try:
                meta.step(*failing(phase, when))
                out[e, name] = "no error"
            except (RuntimeError, ValueError) as err:
                out[e, name] = f"{type(err).__name__}: {err}"
        meta.step(lambda: train_loss(model, hyper, x, y), lambda: val_loss(model, hyper, xv, yv))
    out["restored"] = all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    for name, options in (("estimator", {"estimator": "jvp" if rank == 0 else "lookahead"}),
                          ("keep", {"estimator": "jvp", "keep_train_grad": rank == 0})):
        try:
            evograd.EvoGrad(model, hyper, inner_lr=LR, parallel="data", **options)
            out[name] = "no error"
        except ValueError as err:
            out[name] = f"ValueError: {err}"
    try:
        evograd.EvoGrad(make_model(16 + rank), hyper, estimator="jvp", inner_lr=LR,
                        parallel="data")
        out["shapes"] = "no error"
    except ValueError as err:
        out["shapes"] = f"ValueError: {err}"
    meta = evograd.EvoGrad(model, hyper, estimator="jvp", inner_lr=LR, parallel="data",
                           check_replicas=True)
    out["drift"] = step_after_drift(meta, model, hyper, rank, (x, y), (xv, yv))
    dist.barrier()
    return out


class Shifted(nn.Module):
    """A parameter that enters the loss only through its sum: autograd
    returns its gradient expanded (stride 0), which cannot be written into."""

    def __init__(self):
        super().__init__()
        self.net = make_model()
        self.shift = nn.Parameter(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))

    def forward(self, x):
        return self.net(x) + self.shift.sum()


def job_expanded_gradient(rank, world):
    (x, y), (xv, yv) = whole_batches(world)
    mine = ((shard(x, rank, world), shard(y, rank, world)),
            (shard(xv, rank, world), shard(yv, rank, world)))
    got, _ = step_on(Shifted(), Hyper(), mine, estimator="jvp", parallel="data",
                     keep_train_grad=True)
    return got
