"""Meta-Weight-Net under DistributedDataParallel on N ranks: time and bytes
sent per meta-step, EvoGrad (parallel="data") against an exact T1-T2.

T1-T2 under data parallelism: the one-step unrolled model must take the
mean of the ranks' training gradients (what a DDP update would apply), and
the hypergradient differentiates through that mean. DDP cannot do this
(its all-reduce runs in backward hooks and is not differentiable, so
`create_graph=True` through a DDP backward gives each rank only its own
gradient). The official MWN code, which builds the unrolled step on a
separate meta model with `torch.autograd.grad(..., create_graph=True)`,
would have to all-reduce that P-sized inner gradient with a differentiable
collective, as done here (`_MeanOverRanks`), and the hypergradient's
backward then all-reduces another P-sized tensor, plus the N-element
lambda-gradient. EvoGrad sends 2K + N + 4 values (docs/api.md lists them).
T1-T2's exact estimator in EvoGrad ("jvp", parallel="data") all-reduces the
inner and the validation gradient, each the reduction a DDP update makes,
and lambda's N values; with keep_train_grad ("jvp-onestep") the inner
gradient is the update's too, so the iteration makes no DDP update of its
own: two P-sized reductions per iteration where T1-T2's loop makes three.

Bytes are the payloads this process hands to collectives per meta-step,
counted in the wrappers the meta-steps call (EvoGrad's own counter;
`_MeanOverRanks` for T1-T2). The ordinary DDP update that follows each
meta-step is the same for both methods and reported separately.

    .venv/bin/python examples/mwn/bench.py --ranks 2 --out results/mwn_ranks
"""
import os
import socket
import sys
import time
from datetime import timedelta

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

METHODS = ("t1t2", "evograd", "jvp", "jvp-onestep")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mean_over_ranks():
    import torch
    import torch.distributed as dist

    class MeanOverRanks(torch.autograd.Function):
        """all-reduce mean, differentiable (its backward is another), with
        the payload bytes of both directions counted."""
        sent = 0

        @staticmethod
        def forward(ctx, x):
            y = x.clone()
            MeanOverRanks.sent += y.numel() * y.element_size()
            dist.all_reduce(y)
            return y / dist.get_world_size()

        @staticmethod
        def backward(ctx, g):
            g = g.contiguous().clone()
            MeanOverRanks.sent += g.numel() * g.element_size()
            dist.all_reduce(g)
            return g / dist.get_world_size()

    return MeanOverRanks


def _worker(rank, world, port, cfg, out_dir):
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.nn import functional as F

    import data
    import evograd
    from methods import fast_forward, weighted_loss
    from models import ResNet32, WeightingNet, count

    torch.set_num_threads(1)
    device = torch.device(cfg["device"])
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(rank)
        device = torch.device("cuda", rank)
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world, timeout=timedelta(seconds=300))
    MeanOverRanks = _mean_over_ranks()

    torch.manual_seed(0)
    images, labels = data.load_split("t10k")
    noisy, _ = data.uniform_noise(labels, 0.4, seed=0)
    B = cfg["batch_size"]  # per rank
    lo = rank * 2 * B
    x, y = data.to_input(images[lo:lo + B]).to(device), noisy[lo:lo + B].to(device)
    xm, ym = data.to_input(images[lo + B:lo + 2 * B]).to(device), labels[lo + B:lo + 2 * B].to(device)
    model = ResNet32(width=cfg["width"]).to(device)
    ddp = nn.parallel.DistributedDataParallel(model)
    vnet = WeightingNet(cfg["hidden"]).to(device)
    ddp_bytes = {"n": 0}

    def counting_hook(state, bucket):
        t = bucket.buffer()
        state["n"] += t.numel() * t.element_size()
        t.div_(dist.get_world_size())
        return dist.all_reduce(t, async_op=True).get_future().then(lambda f: f.value()[0])

    ddp.register_comm_hook(ddp_bytes, counting_hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9)
    params = list(model.parameters())

    method = cfg["method"]
    if method == "evograd":
        meta = evograd.EvoGrad(ddp, vnet, population=cfg["population"], sigma=1e-3,
                               temperature=0.05, seed=0, scale="t1t2", inner_lr=0.1,
                               parallel="data")
    elif method != "t1t2":
        meta = evograd.EvoGrad(ddp, vnet, estimator="jvp", inner_lr=0.1, seed=0, parallel="data",
                               keep_train_grad=method == "jvp-onestep")

    def meta_step():
        """One meta-step; returns the payload bytes it handed to collectives."""
        for p in vnet.parameters():
            p.grad = None
        if method != "t1t2":
            before = meta.exchange.collectives.bytes_sent
            meta.step(lambda: weighted_loss(ddp(x), y, vnet), lambda: F.cross_entropy(ddp(xm), ym))
            return meta.exchange.collectives.bytes_sent - before
        before = MeanOverRanks.sent
        train = weighted_loss(fast_forward(model, params, x), y, vnet)
        local = torch.autograd.grad(train, params, create_graph=True)
        mean = MeanOverRanks.apply(torch.cat([g.reshape(-1) for g in local]))
        fast, offset = [], 0
        for p in params:
            fast.append(p - 0.1 * mean[offset:offset + p.numel()].view_as(p))
            offset += p.numel()
        val = F.cross_entropy(fast_forward(model, fast, xm), ym)
        grads = torch.autograd.grad(val, list(vnet.parameters()))
        flat = torch.cat([g.reshape(-1) for g in grads])
        sent = flat.numel() * flat.element_size()
        dist.all_reduce(flat)
        flat /= world
        offset = 0
        for p in vnet.parameters():
            p.grad = flat[offset:offset + p.numel()].view_as(p).clone()
            offset += p.numel()
        return MeanOverRanks.sent - before + sent

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dist.barrier()

    times, update_times, sent, update_bytes = [], [], [], []
    for i in range(cfg["warmup"] + cfg["repeats"]):
        opt.zero_grad()
        sync()
        t0 = time.perf_counter()
        b = meta_step()
        sync()
        t1 = time.perf_counter()
        before = ddp_bytes["n"]
        if method != "jvp-onestep":  # there the meta-step left the update's gradient in .grad
            F.cross_entropy(ddp(x), y).backward()  # the ordinary DDP update
        opt.step()
        sync()
        if i >= cfg["warmup"]:
            times.append(t1 - t0)
            update_times.append(time.perf_counter() - t1)
            sent.append(b)
            update_bytes.append(ddp_bytes["n"] - before)
    # The slowest rank sets the pace: gather each rank's medians.
    t = torch.tensor([sorted(times)[len(times) // 2], sorted(update_times)[len(times) // 2]],
                     dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    result = {**cfg, "ranks": world, "median_s": t[0].item(), "update_median_s": t[1].item(),
              "bytes_per_meta_step": max(sent), "ddp_update_bytes": max(update_bytes),
              "params": count(model), "hyperparams": count(vnet)}
    if rank == 0:
        torch.save(result, os.path.join(out_dir, "result.pt"))
    dist.destroy_process_group()


def run(cfg, ranks):
    """One (method, setting) on `ranks` spawned processes; rank 0's result."""
    import tempfile

    import torch
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(_worker, args=(ranks, _free_port(), cfg, tmp), nprocs=ranks,
                           start_method="spawn")
        return torch.load(os.path.join(tmp, "result.pt"))


def table(rows):
    lines = ["| ranks | method | params | time per meta-step | time per iteration "
             "(meta-step + update) | bytes sent per meta-step (per rank) | DDP update bytes | "
             "bytes per iteration |",
             "|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        update_s = r.get("update_median_s")
        lines.append(f"| {r['ranks']} | {r['method']} | {r['params'] / 1e6:.2f}M | "
                     f"{r['median_s']:.3f} s | "
                     + (f"{r['median_s'] + update_s:.3f} s" if update_s is not None else "–")
                     + f" | {r['bytes_per_meta_step']:,} | {r['ddp_update_bytes']:,} | "
                     f"{r['bytes_per_meta_step'] + r['ddp_update_bytes']:,} |")
    return "\n".join(lines)


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from common import ab

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    colors = {"t1t2": "tab:red", "evograd": "tab:green", "jvp": "tab:cyan", "jvp-onestep": "tab:pink"}
    labels = {"t1t2": "T1-T2 (exact, differentiable all-reduce)", "evograd": "EvoGrad, parallel='data'",
              "jvp": "EvoGrad jvp, parallel='data'", "jvp-onestep": "jvp + keep_train_grad"}
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    ab.plot_vs_size(axes, rows, methods, ("bytes_per_meta_step", "median_s"), colors, labels)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("bytes sent per meta-step, per rank (log)")
    axes[1].set_ylabel("time per meta-step (s)")
    ranks = rows[0]["ranks"]
    fig.suptitle(f"Meta-Weight-Net meta-step under DDP, {ranks} ranks")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
