#!/usr/bin/env python3
"""Meta-Weight-Net on Fashion-MNIST with uniform label noise.

The weighting network V (1 -> hidden -> 1, sigmoid) re-weights per-sample
losses; it is meta-learned on a clean set of 1000 images (100 per class)
taken from the training set, by T1-T2 (second order), by EvoGrad (this
plugin), or by the paper's plain EvoGrad. `baseline` trains on the noisy
labels with no meta-learning.

    .venv/bin/python examples/mwn/train.py --method evograd --noise-rate 0.4

--model mlp or cnn swaps ResNet-32 for a small classifier that memorises
noisy labels within minutes on a CPU; --eval-every N records a curve (test
accuracy, and the weights V gives to corrupted and clean training examples,
whose mask is known) every N iterations; the result holds V(loss) on a grid.

Several processes (DistributedDataParallel and EvoGrad's data-parallel
meta-step; gloo on CPU, NCCL on CUDA), each taking its share of every batch:

    torchrun --nproc_per_node=2 examples/mwn/train.py --distributed --method evograd

--fsdp shards the classifier over the processes with FSDP2 (fully_shard on
each block and on the whole) instead of replicating it with DDP; the
meta-step then perturbs and projects each process's rows (torch >= 2.6).

Long runs: --checkpoint PATH saves everything the next iteration reads
every --checkpoint-every iterations; after a crash or a kill, the same
command with --resume continues bit for bit as the uninterrupted run would
have (one file per rank under torchrun).
"""
import argparse
import hashlib
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import checkpoint  # noqa: E402
import data  # noqa: E402
from common.grid import run_and_report  # noqa: E402
from common.measure import PeakMemory, median, timed  # noqa: E402
from methods import METHODS, VNET_INPUTS, MWNTrainer  # noqa: E402
from models import CLASSIFIERS, WeightingNet, classifier, count  # noqa: E402

LOSS_GRID = [i / 10 for i in range(101)]  # per-example losses 0..10 at which V is recorded


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=METHODS, default="evograd")
    p.add_argument("--noise-rate", type=float, default=0.4, help="fraction of training labels corrupted")
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--meta-batch-size", type=int, default=100)
    p.add_argument("--model", choices=CLASSIFIERS, default="resnet32", help="the classifier")
    p.add_argument("--width", type=int, default=1, help="ResNet-32 channel multiplier")
    p.add_argument("--vnet-hidden", type=int, default=100, help="weighting-net hidden units (301 hyperparameters at 100)")
    p.add_argument("--lr", type=float, default=0.1, help="classifier SGD lr (also T1-T2's inner lr)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="classifier SGD weight decay")
    p.add_argument("--vnet-lr", type=float, default=1e-3)
    p.add_argument("--vnet-weight-decay", type=float, default=1e-4, help="weight decay of the weighting net (official: 1e-4)")
    p.add_argument("--meta-weights", choices=["mean", "sum"], default="mean",
                   help="the meta-step's training loss: sum(cost * V) / n ('mean', MW-Net's current code) "
                        "or sum(cost * V / sum V) ('sum': its first release and the EvoGrad paper's code)")
    p.add_argument("--vnet-optimizer", choices=["adam", "sgd"], default="adam",
                   help="the weighting net's optimiser: 'adam' (official MW-Net) or 'sgd' (momentum 0.9, "
                        "Nesterov: the EvoGrad paper's MWN code)")
    p.add_argument("--scale", choices=["t1t2", "none"], default="t1t2",
                   help="EvoGrad's hypergradient scale: T1-T2's (inner lr = --lr), or its own (the paper's)")
    p.add_argument("--seed-schedule", choices=["mixed", "consecutive"], default="mixed",
                   help="EvoGrad's per-step seeds; 'consecutive' reproduces results recorded before 'mixed'")
    p.add_argument("--population", type=int, default=2, help="EvoGrad K")
    p.add_argument("--vnet-input", choices=VNET_INPUTS, default="own",
                   help="what V is fed in the meta-step's training loss: 'own' (official: the losses "
                        "at the parameters evaluated, detached; an EvoGrad candidate's own), 'fixed' "
                        "(the current parameters' losses, constant), 'through' (not detached)")
    p.add_argument("--sigma", type=float, default=1e-3, help="EvoGrad noise scale")
    p.add_argument("--temperature", type=float, default=0.05, help="EvoGrad softmax temperature")
    p.add_argument("--noise", choices=["sign", "gauss"], default="sign")
    p.add_argument("--train-size", type=int, default=0, help="use only this many training images (0: all)")
    p.add_argument("--test-size", type=int, default=10000, help="test images to evaluate on")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0,
                   help="test accuracy and training statistics every this many iterations (0: at the end only)")
    p.add_argument("--data-dir", default=str(data.DEFAULT_ROOT))
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    p.add_argument("--distributed", action="store_true",
                   help="under torchrun: DDP and EvoGrad's data-parallel meta-step, a share of every batch per rank")
    p.add_argument("--fsdp", action="store_true",
                   help="with --distributed: shard the classifier with FSDP2 (fully_shard) instead of DDP")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="save the training state here (PATH.rankN per rank under torchrun)")
    p.add_argument("--checkpoint-every", type=int, default=100, help="iterations between checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint when it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--one-step", action="store_true",
                   help="jvp/lookahead: one training pass per iteration (the meta-step leaves the "
                        "classifier's gradient in .grad: keep_train_grad; needs --meta-weights sum)")
    args = p.parse_args(argv)
    if args.fsdp and not args.distributed:
        p.error("--fsdp shards the model over the processes of --distributed")
    if args.fsdp and args.checkpoint:
        p.error("--checkpoint saves whole tensors per rank; an FSDP model's sharded state needs "
                "torch.distributed.checkpoint, which this example does not use")
    return args


def prepare(args):
    images, labels = data.load_split("train", args.data_dir)
    meta_idx, rest = data.split_meta(labels, per_class=100, seed=args.seed)
    if args.train_size:
        rest = rest[torch.randperm(rest.numel(), generator=torch.Generator().manual_seed(args.seed))[:args.train_size]]
    noisy, mask = data.uniform_noise(labels[rest], args.noise_rate, seed=args.seed)
    test_x, test_y = data.load_split("t10k", args.data_dir)
    return dict(train=(images[rest], noisy), meta=(images[meta_idx], labels[meta_idx]),
                test=(test_x[:args.test_size], test_y[:args.test_size]),
                corrupted=mask.float().mean().item(), mask=mask)


@torch.no_grad()
def accuracy(model, images, labels, device, batch=500):
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch):
        x = data.to_input(images[i:i + batch]).to(device)
        correct += (model(x).argmax(1).cpu() == labels[i:i + batch]).sum().item()
    model.train()
    return correct / len(labels)


class TrainingStats:
    """Per-example averages over the iterations since the last report, split by
    whether the example's label was corrupted: loss, whether the model predicts
    the given (possibly wrong) label, V(loss), and the share of the update's
    normalised weight that went to corrupted examples."""

    KEYS = ("loss", "fit", "v")

    def __init__(self):
        self.reset()

    def reset(self):
        self.sums = {f"{k}_{g}": 0.0 for k in self.KEYS for g in ("clean", "corrupted")}
        self.counts = {"clean": 0, "corrupted": 0}
        self.share, self.batches = 0.0, 0

    def add(self, last, y, corrupted):
        groups = {"clean": ~corrupted, "corrupted": corrupted}
        v = last["v"]
        for g, m in groups.items():
            self.counts[g] += int(m.sum())
            self.sums[f"loss_{g}"] += last["cost"][m].sum().item()
            self.sums[f"fit_{g}"] += (last["predicted"][m] == y[m]).sum().item()
            if v is not None:
                self.sums[f"v_{g}"] += v[m].sum().item()
        w = torch.ones_like(last["cost"]) if v is None else v
        self.share += (w[corrupted].sum() / w.sum()).item() if w.sum() > 0 else float("nan")
        self.batches += 1

    def report(self, with_v):
        out = {}
        for k in self.KEYS:
            for g in ("clean", "corrupted"):
                n = self.counts[g]
                out[f"{k}_{g}"] = (self.sums[f"{k}_{g}"] / n if n and (k != "v" or with_v) else None)
        out["share_corrupted"] = self.share / self.batches if self.batches else None
        self.reset()
        return out


@torch.no_grad()
def common_iteration(kept, world):
    """The newest checkpointed iteration every process holds (None: start
    afresh). Processes killed a moment apart can hold newest checkpoints
    one interval apart; resuming each from its own would desynchronise them."""
    if world == 1:
        return max(kept, default=None)
    import torch.distributed as dist
    held = [None] * world
    dist.all_gather_object(held, sorted(kept))
    return max(set.intersection(*map(set, held)), default=None)


def start_processes(args):
    """(rank, world size, device): torchrun's environment under --distributed."""
    if not args.distributed:
        return 0, 1, torch.device(args.device)
    import torch.distributed as dist
    if "RANK" not in os.environ:
        raise SystemExit("--distributed runs under torchrun, e.g. "
                         "torchrun --nproc_per_node=2 examples/mwn/train.py --distributed")
    device = torch.device(args.device)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world or args.meta_batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} and --meta-batch-size {args.meta_batch_size} "
                         f"must divide among {world} processes")
    return rank, world, device


def parameters_sha256(*modules):
    """A fingerprint of parameters and buffers, to compare runs bit for bit
    (FSDP shards are gathered whole: every rank must call this)."""
    h = hashlib.sha256()
    for m in modules:
        for t in m.state_dict().values():
            t = t.full_tensor() if hasattr(t, "full_tensor") else t
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def shard_with_fsdp(model):
    """FSDP2: each child with parameters, then the whole model."""
    try:
        from torch.distributed.fsdp import fully_shard
    except Exception:  # noqa: BLE001  (torch 1.13 on Python 3.11 raises ValueError here)
        raise SystemExit(f"--fsdp needs FSDP2 (torch.distributed.fsdp.fully_shard); torch "
                         f"{torch.__version__} has none") from None
    for child in model.children():
        if any(True for _ in child.parameters()):
            fully_shard(child)
    fully_shard(model)
    return model


def weighting_function(vnet, device):
    """V(loss) on LOSS_GRID."""
    return vnet(torch.tensor(LOSS_GRID, device=device).reshape(-1, 1)).flatten().tolist()


def run(args):
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rank, world, device = start_processes(args)
    ds = prepare(args)
    model = classifier(args.model, args.width).to(device)
    vnet = WeightingNet(args.vnet_hidden).to(device)
    net = model
    if args.fsdp:
        net = model = shard_with_fsdp(model)
    elif world > 1 or args.distributed:
        # every rank starts from the same weights (same seed), as DDP requires
        net = torch.nn.parallel.DistributedDataParallel(model)
    trainer = MWNTrainer(net, vnet, args.method, lr=args.lr, weight_decay=args.weight_decay,
                         vnet_lr=args.vnet_lr,
                         vnet_weight_decay=args.vnet_weight_decay, vnet_optimizer=args.vnet_optimizer,
                         population=args.population, sigma=args.sigma,
                         temperature=args.temperature, noise=args.noise, seed=args.seed,
                         scale=args.scale, seed_schedule=args.seed_schedule,
                         vnet_input=args.vnet_input, meta_weights=args.meta_weights, parallel="data" if args.distributed else None,
                         one_step=args.one_step)
    sched = torch.optim.lr_scheduler.MultiStepLR(
        trainer.opt, [int(0.8 * args.iterations), int(0.9 * args.iterations)], 0.1)
    batches = data.Batches(*ds["train"], args.batch_size, args.seed)
    meta_batches = data.Batches(*ds["meta"], args.meta_batch_size, args.seed + 1)

    times, losses, curve, snapshots = [], [], [], []
    stats, meta_learned = TrainingStats(), args.method != "baseline"
    # V(loss) at about ten of the evaluations (and the last), to keep results small.
    snapshot_stride = max(1, args.iterations // args.eval_every // 10) if args.eval_every else 1

    def record(iteration):
        entry = {"iteration": iteration, "test_accuracy": accuracy(model, *ds["test"], device)}
        entry.update({k: (None if v is None else round(v, 5)) for k, v in stats.report(meta_learned).items()})
        curve.append(entry)
        if meta_learned and (len(curve) % snapshot_stride == 0 or iteration == args.iterations):
            snapshots.append({"iteration": iteration,
                              "weight": [round(w, 5) for w in weighting_function(vnet, device)]})

    # Everything the next iteration reads, for --checkpoint / --resume.
    saved = {"model": model, "vnet": vnet, "opt": trainer.opt, "vopt": trainer.vopt, "sched": sched,
             "batches": batches, "meta_batches": meta_batches}
    if args.method in ("evograd", "lookahead", "jvp"):
        saved["evograd"] = trainer.meta
    ckpt = checkpoint.rank_path(args.checkpoint, rank, world) if args.checkpoint else None

    def logs():
        return {"times": times, "losses": losses, "curve": curve, "snapshots": snapshots,
                "stats": stats.__dict__, "grad_to_decay": trainer.grad_to_decay,
                "generator": trainer.generator.get_state()}

    start = 0
    if args.resume:
        if ckpt is None:
            raise SystemExit("--resume needs --checkpoint PATH")
        kept = checkpoint.iterations(ckpt)
        agreed = common_iteration(kept, world)
        if agreed is None and kept:
            print(f"rank {rank}: no checkpoint iteration is held by every process (this one holds "
                  f"{sorted(kept)}); starting afresh", file=sys.stderr)
        if agreed is not None:
            start, extra = checkpoint.load(ckpt, saved, agreed)
            times[:], losses[:], curve[:], snapshots[:] = (extra["times"], extra["losses"], extra["curve"],
                                                          extra["snapshots"])
            stats.__dict__.update(extra["stats"])
            trainer.grad_to_decay[:] = extra["grad_to_decay"]
            trainer.generator.set_state(extra["generator"])

    def shard(t):
        return t[rank::world]

    bar = tqdm(range(start, args.iterations), desc=f"{args.method}", disable=args.quiet or rank > 0,
               dynamic_ncols=True, initial=start, total=args.iterations)
    with PeakMemory(device) as mem:
        for it in bar:
            (x, y), (xm, ym) = next(batches), next(meta_batches)
            x, y, xm, ym = shard(x).to(device), shard(y).to(device), shard(xm).to(device), shard(ym).to(device)
            dt, (loss, meta_loss) = timed(lambda: trainer.iteration(x, y, xm, ym), device)
            sched.step()
            times.append(dt)
            losses.append(loss)
            stats.add({k: (None if t is None else t.cpu()) for k, t in trainer.last.items()},
                      y.cpu(), ds["mask"][shard(batches.last)])
            # an FSDP forward is collective: every rank evaluates, rank 0 reports
            if args.eval_every and (it + 1) % args.eval_every == 0 and it + 1 < args.iterations \
                    and (rank == 0 or args.fsdp):
                record(it + 1)
            if ckpt is not None and (it + 1) % args.checkpoint_every == 0:
                checkpoint.save(ckpt, it + 1, saved, logs())
            if it % 10 == 0:
                bar.set_postfix(loss=f"{loss:.3f}", meta=f"{meta_loss:.3f}" if meta_loss else "-",
                                s_per_it=f"{median(times[-50:]):.2f}")
    if args.fsdp:
        record(args.iterations)
        sha256 = parameters_sha256(model, vnet)
    if rank > 0:
        return None  # rank 0 reports
    if not args.fsdp:
        record(args.iterations)
        sha256 = parameters_sha256(model, vnet)
    acc = curve[-1]["test_accuracy"]
    best = max(curve, key=lambda e: e["test_accuracy"])
    result = {
        "method": args.method, "noise_rate": args.noise_rate, "corrupted_fraction": ds["corrupted"],
        "iterations": args.iterations, "batch_size": args.batch_size, "width": args.width,
        "seed": args.seed, "test_accuracy": acc, "test_size": len(ds["test"][1]),
        "model": args.model, "train_size": len(ds["train"][1]), "lr": args.lr,
        "weight_decay": args.weight_decay, "eval_every": args.eval_every,
        "best_test_accuracy": best["test_accuracy"], "best_iteration": best["iteration"],
        "curve": curve, "loss_grid": LOSS_GRID,
        "weighting_function": snapshots[-1]["weight"] if snapshots else None,
        "weighting_snapshots": snapshots,
        "median_iteration_s": median(times[1:]), "peak_memory_mib": mem.peak_bytes / 2**20,
        "model_parameters": count(model), "hyperparameters": count(vnet),
        "final_train_loss": sum(losses[-20:]) / max(len(losses[-20:]), 1),
        "device": str(device), "torch": torch.__version__,
        "scale": args.scale if args.method == "evograd" else None,
        "population": args.population if args.method.startswith("evograd") else None,
        "vnet_input": args.vnet_input if args.method != "baseline" else None,
        "seed_schedule": args.seed_schedule if args.method == "evograd" else None,
        "vnet_weight_decay": args.vnet_weight_decay, "vnet_optimizer": args.vnet_optimizer,
        "vnet_hidden": args.vnet_hidden, "vnet_lr": args.vnet_lr, "meta_weights": args.meta_weights,
        "median_grad_to_decay": median(trainer.grad_to_decay) if trainer.grad_to_decay else None,
        "processes": world, "resumed_at": start if args.resume else None,
        "parameters_sha256": sha256, "sharded": args.fsdp, "one_step": args.one_step,
    }
    return result


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.distributed and int(os.environ.get("RANK", 0)) > 0:
            return run(args)  # the other ranks train; rank 0 reports
        return run_and_report(run, args, lambda r: (f"{r['method']}: test accuracy {100 * r['test_accuracy']:.2f}% "
                      f"after {args.iterations} iterations at {100 * args.noise_rate:.0f}% label noise; "
                      f"{r['median_iteration_s']:.3f} s/iteration, peak memory +{r['peak_memory_mib']:.0f} MiB"))
    finally:
        if args.distributed:
            import torch.distributed as dist
            if dist.is_initialized():
                dist.destroy_process_group()


if __name__ == "__main__":
    main()
