"""What each rank runs in the torch.distributed tests (test_parallel.py, ranks.py),
importable by torch.multiprocessing's spawn and runnable as a script (the
checkpoint/resume jobs, which the tests really kill with SIGKILL).

Every job uses gloo on the CPU and float64 models without batch statistics,
so that a data-parallel step can equal one step on the concatenated batch.
"""
import argparse
import os
import signal
import sys
import traceback
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F

import evograd
from evograd.parallel import PeerFailed

FEATURES, CLASSES = 6, 3


def make_model(hidden=16, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(FEATURES, hidden), nn.Tanh(),
                         nn.Linear(hidden, CLASSES)).double()


def make_data(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (n,), generator=g)
    return x, y


class Hyper(nn.Module):
    """Two hyperparameters: a log weight decay (read by the training loss
    only) and a per-class loss weighting (also read by the validation loss,
    so the direct term is exercised)."""

    def __init__(self):
        super().__init__()
        self.log_decay = nn.Parameter(torch.tensor([-3.0], dtype=torch.float64))
        self.class_logits = nn.Parameter(torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64))


def train_loss(model, hyper, x, y):
    w = torch.softmax(hyper.class_logits, 0)[y] * CLASSES
    per_sample = F.cross_entropy(model(x), y, reduction="none")
    decay = sum((p ** 2).sum() for p in model.parameters())
    return (w * per_sample).mean() + torch.exp(hyper.log_decay).sum() * decay


def val_loss(model, hyper, x, y):
    return F.cross_entropy(model(x), y) + 0.01 * (hyper.class_logits ** 2).sum()


def shard(t, rank, world):
    n = t.shape[0] // world
    return t[rank * n:(rank + 1) * n]


def one_step(model, hyper, batches, **options):
    """One meta-step's lambda-gradient (flat float64) and the step's result."""
    (x, y), (xv, yv) = batches
    meta = evograd.EvoGrad(model, hyper, **options)
    r = meta.step(lambda: train_loss(model, hyper, x, y), lambda: val_loss(model, hyper, xv, yv))
    grad = torch.cat([p.grad.reshape(-1) for p in hyper.parameters()])
    return grad, r, meta


def meta_update(meta, net, hyper, hopt, x, y, xv, yv):
    """The meta-step and the meta-optimiser's step."""
    hopt.zero_grad()
    meta.step(lambda: train_loss(net, hyper, x, y), lambda: val_loss(net, hyper, xv, yv))
    hopt.step()


def model_update(net, hyper, opt, x, y):
    """The ordinary update of the model, with the learned class weighting."""
    opt.zero_grad()
    with torch.no_grad():
        w = torch.softmax(hyper.class_logits, 0) * CLASSES
    (w[y] * F.cross_entropy(net(x), y, reduction="none")).mean().backward()
    opt.step()


# ---- jobs run under spawn: job(rank, world) -> a picklable result -------------

def job_data_step(rank, world):
    """One data-parallel step on this rank's shard; bytes sent for two model sizes."""
    out = {}
    (x, y), (xv, yv) = make_data(12, 1), make_data(6, 2)
    for hidden in (16, 160):
        model, hyper = make_model(hidden), Hyper()
        batches = ((shard(x, rank, world), shard(y, rank, world)),
                   (shard(xv, rank, world), shard(yv, rank, world)))
        meta = evograd.EvoGrad(model, hyper, population=3, sigma=1e-3, temperature=0.05,
                               seed=11, parallel="data")
        before = meta.exchange.collectives.bytes_sent
        r = meta.step(lambda: train_loss(model, hyper, *batches[0]),
                      lambda: val_loss(model, hyper, *batches[1]))
        out[hidden] = {"grad": torch.cat([p.grad.reshape(-1) for p in hyper.parameters()]),
                       "losses": r.losses, "val": r.val_loss, "seed": r.seed,
                       "step_bytes": meta.exchange.collectives.bytes_sent - before,
                       "step_calls": meta.exchange.collectives.calls}
    return out


def job_candidates_step(rank, world):
    """Candidate-parallel: the same batches on every rank, K = 4."""
    model, hyper = make_model(), Hyper()
    batches = (make_data(12, 1), make_data(6, 2))
    grad, r, meta = one_step(model, hyper, batches, population=4, sigma=1e-3, temperature=0.05,
                             seed=11, parallel="candidates")
    return {"grad": grad, "losses": r.losses, "val": r.val_loss}


def counting_hook(state, bucket):
    """A DDP communication hook that counts its calls in state["calls"] and
    then all-reduces as DDP would (mean)."""
    state["calls"] += 1
    t = bucket.buffer()
    t.div_(dist.get_world_size())
    fut = dist.all_reduce(t, async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def job_ddp_training(rank, world, iterations=20):
    """MWN-style loop: meta-step on a DDP-wrapped model, then the ordinary
    DDP update with the hyperparameters' weighting; replicas must stay equal."""
    model = make_model()
    ddp = nn.parallel.DistributedDataParallel(model)
    hook = {"calls": 0}
    ddp.register_comm_hook(hook, counting_hook)
    hyper = Hyper()
    meta = evograd.EvoGrad(ddp, hyper, population=2, sigma=1e-3, temperature=0.05, seed=5,
                           parallel="data", check_replicas=True)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    hopt = torch.optim.Adam(hyper.parameters(), lr=1e-2)
    meta_calls = []
    for it in range(iterations):
        (x, y), (xv, yv) = make_data(8 * world, 100 + it), make_data(4 * world, 200 + it)
        x, y, xv, yv = (shard(t, rank, world) for t in (x, y, xv, yv))
        calls = hook["calls"]
        meta_update(meta, ddp, hyper, hopt, x, y, xv, yv)
        meta_calls.append(hook["calls"] - calls)
        model_update(ddp, hyper, opt, x, y)
    return {"params": [p.detach().clone() for p in model.parameters()],
            "hyper": [h.detach().clone() for h in hyper.parameters()],
            "meta_step_ddp_calls": meta_calls, "ddp_calls": hook["calls"]}


def job_failures(rank, world):
    """Errors on one rank become errors on all: construction with another
    sigma, a training closure raising on rank 1, a validation closure raising
    on rank 0 (candidate-parallel)."""
    out = {}
    model, hyper = make_model(), Hyper()
    (x, y), (xv, yv) = make_data(8, 1), make_data(4, 2)
    try:
        evograd.EvoGrad(model, hyper, sigma=1e-3 * (1 + rank), parallel="data")
        out["options"] = "no error"
    except ValueError as e:
        out["options"] = f"ValueError: {e}"
    try:
        evograd.EvoGrad(model, hyper, population=2 if rank else -1, parallel="data")
        out["bad_local"] = "no error"
    except (ValueError, PeerFailed) as e:
        out["bad_local"] = f"{type(e).__name__}: {e}"

    before = [p.detach().clone() for p in model.parameters()]

    def boom():
        raise RuntimeError("closure failed on purpose")

    for mode, fail_rank, where in (("data", 1, "train"), ("candidates", 0, "val")):
        meta = evograd.EvoGrad(model, hyper, population=2, parallel=mode, seed=3)
        train = (boom if rank == fail_rank and where == "train"
                 else lambda: train_loss(model, hyper, x, y))
        val = boom if rank == fail_rank and where == "val" else lambda: val_loss(model, hyper, xv, yv)
        try:
            meta.step(train, val)
            out[mode] = "no error"
        except (RuntimeError, ValueError) as e:
            out[mode] = f"{type(e).__name__}: {e}"
        # Still usable afterwards: a clean step goes through on every rank.
        meta.step(lambda: train_loss(model, hyper, x, y), lambda: val_loss(model, hyper, xv, yv))
    out["restored"] = all(torch.equal(p, b) for p, b in zip(model.parameters(), before))

    # A replica that drifted by one ulp in one weight: caught before the step.
    meta = evograd.EvoGrad(model, hyper, parallel="data", check_replicas=True, seed=3)
    out["drift"] = step_after_drift(meta, model, hyper, rank, (x, y), (xv, yv))
    return out


def step_after_drift(meta, model, hyper, rank, batch, val_batch) -> str:
    """Moves one weight by one ulp on rank 1, then steps: the error each rank
    reports ("no error" if none)."""
    if rank == 1:
        with torch.no_grad():
            w = model[0].weight
            w[0, 0] = torch.nextafter(w[0, 0], torch.tensor(2.0, dtype=w.dtype))
    try:
        meta.step(lambda: train_loss(model, hyper, *batch), lambda: val_loss(model, hyper, *val_batch))
        return "no error"
    except RuntimeError as e:  # PeerFailed too
        return f"{type(e).__name__}: {e}"


def job_sharded_list(rank, world):
    """FSDP/ZeRO style: the flattened parameter list cut unevenly, each rank
    holding one piece and passing where it starts (offset). Returns this
    rank's candidates and combination, and the projections summed over ranks
    (one all-reduce), for comparison with the whole list in one process."""
    whole = sharded_whole_list()
    flat = torch.cat([t.flatten() for t in whole])
    cuts = sharded_cuts(flat.numel(), world)
    mine = flat[cuts[rank]:cuts[rank + 1]].clone()
    seed, sigma, K = 21, 0.05, 4
    out = {"cuts": cuts}
    for noise in ("sign", "gauss"):
        out[f"candidate_{noise}"] = evograd.perturb([mine], seed, 3, sigma, noise, offset=cuts[rank])[0]
        losses = torch.tensor([0.3, 0.1, 0.4, 0.2], dtype=torch.float64)
        out[f"combined_{noise}"] = evograd.combine([mine], losses, 0.2, seed, sigma, noise,
                                                   offset=cuts[rank])[0]
        c = evograd.project([mine], seed, K, sigma, noise, offset=cuts[rank])
        dist.all_reduce(c)  # partial c_k of the shards: one all-reduce (sum)
        out[f"projections_{noise}"] = c
    return out


def sharded_whole_list():
    """A parameter list (several tensors) that the sharded job cuts."""
    g = torch.Generator().manual_seed(3)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in ((40, 30), (30,), (3000,), (7,))]


def sharded_cuts(total, world):
    """Uneven pieces: each rank's share grows with its rank, off every quad,
    batch and tile boundary of the noise."""
    weights = [r + 1 for r in range(world)]
    cuts, at = [0], 0
    for w in weights[:-1]:
        at += total * w // sum(weights) + 1
        cuts.append(at)
    return cuts + [total]


def _spawned(rank, world, port, job, result_dir):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=60))
    try:
        where, _, name = job.rpartition(".")
        module = __import__(where) if where else sys.modules[__name__]
        result = {"ok": getattr(module, name)(rank, world)}
    except BaseException:  # noqa: BLE001  (reported to the parent)
        result = {"error": traceback.format_exc()}
    torch.save(result, Path(result_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


# ---- checkpoint / resume: a training run that checkpoints, dies, resumes --------

def training_run(args):
    """MWN-style training for --iterations, a checkpoint every --every, killed
    by SIGKILL after iteration --kill-after (if given); --resume continues
    from the checkpoint. Writes the final state to --out."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    torch.set_num_threads(1)
    parallel = None
    if world > 1:
        dist.init_process_group("gloo", timeout=timedelta(seconds=60))
        parallel = "data"
    torch.manual_seed(0)
    model, hyper = make_model(), Hyper()
    net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
    meta = evograd.EvoGrad(net, hyper, population=2, sigma=1e-3, temperature=0.05,
                           noise="gauss", parallel=parallel)  # seed from torch's: saved below
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    hopt = torch.optim.Adam(hyper.parameters(), lr=1e-2)
    ckpt = Path(args.checkpoint) / f"rank{rank}.pt"
    start = 0
    if args.resume:
        state = torch.load(ckpt)
        model.load_state_dict(state["model"])
        hyper.load_state_dict(state["hyper"])
        opt.load_state_dict(state["opt"])
        hopt.load_state_dict(state["hopt"])
        meta.load_state_dict(state["evograd"])
        torch.set_rng_state(state["rng"])
        start = state["iteration"]
    for it in range(start, args.iterations):
        (x, y), (xv, yv) = make_data(8 * world, 100 + it), make_data(4 * world, 200 + it)
        x, y, xv, yv = (shard(t, rank, world) for t in (x, y, xv, yv))
        x = F.dropout(x, 0.1)  # draws from torch's generator: its state is checkpointed
        meta_update(meta, net, hyper, hopt, x, y, xv, yv)
        model_update(net, hyper, opt, x, y)
        if (it + 1) % args.every == 0:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "hyper": hyper.state_dict(),
                        "opt": opt.state_dict(), "hopt": hopt.state_dict(),
                        "evograd": meta.state_dict(), "rng": torch.get_rng_state(),
                        "iteration": it + 1}, tmp)
            os.replace(tmp, ckpt)  # a kill mid-write leaves the previous checkpoint
        if args.kill_after is not None and it + 1 == args.kill_after:
            if world > 1:
                dist.barrier()  # every rank has passed its checkpoint
            os.kill(os.getpid(), signal.SIGKILL)
    torch.save({"params": [p.detach() for p in model.parameters()],
                "hyper": [h.detach() for h in hyper.parameters()],
                "evograd": meta.state_dict()}, Path(args.out) / f"rank{rank}.pt")
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=training_run.__doc__)
    p.add_argument("--iterations", type=int, default=12)
    p.add_argument("--every", type=int, default=4)
    p.add_argument("--kill-after", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--out", required=True)
    training_run(p.parse_args())
    sys.exit(0)
