#!/usr/bin/env python3
"""A/B benchmark of one Meta-Weight-Net iteration: plain training (no meta),
T1-T2, the paper's plain EvoGrad and this plugin's EvoGrad, side by side on
the same model, batch and data. Each (method, setting) runs in a fresh
process so that its peak memory is its own (docs/design.md, Measuring).

Sweeps: ResNet-32 width (model size), population K, and hyperparameter count
(weighting-net width). Prints tables, writes JSON and PNG plots.

    .venv/bin/python examples/mwn/bench.py --out results/mwn_bench
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))

from common import ab  # noqa: E402

METHOD_ORDER = ["plain", "t1t2", "evograd-reference", "evograd"]
LABELS = {"plain": "plain (no meta)", "t1t2": "T1-T2 (second order)",
          "evograd-reference": "EvoGrad, paper code", "evograd": "EvoGrad, this plugin"}
COLORS = {"plain": "tab:gray", "t1t2": "tab:red", "evograd-reference": "tab:blue", "evograd": "tab:green"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/mwn_bench"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=None, help="default: 32 on CPU, 100 on CUDA")
    p.add_argument("--widths", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    p.add_argument("--populations", type=int, nargs="*", default=[2, 4, 8, 16, 32])
    p.add_argument("--population-width", type=int, default=2, help="ResNet width for the K sweep")
    p.add_argument("--hidden", type=int, nargs="*", default=[100, 1000, 10000],
                   help="weighting-net hidden units for the hyperparameter sweep (3h+1 hyperparameters)")
    p.add_argument("--methods", nargs="*", default=METHOD_ORDER, choices=METHOD_ORDER)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3, help="timed iterations per process (median)")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--replot", action="store_true", help="redraw the plots from OUT/mwn_bench.json")
    p.add_argument("--ranks", type=int, default=0,
                   help="instead: T1-T2 vs EvoGrad under DDP on this many processes (gloo on CPU, "
                        "NCCL on CUDA), time and bytes sent per meta-step (see ranks.py)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


# ---- worker: one method, one setting, in its own process ---------------------

def worker(cfg):
    import torch
    from torch.nn import functional as F

    import data
    from common.measure import PeakMemory, median, timed
    from methods import MWNTrainer
    from models import ResNet32, WeightingNet, count

    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    torch.manual_seed(0)
    device = torch.device(cfg["device"])
    images, labels = data.load_split("t10k")
    noisy, _ = data.uniform_noise(labels, 0.4, seed=0)
    B = cfg["batch_size"]
    x, y = data.to_input(images[:B]).to(device), noisy[:B].to(device)
    xm, ym = data.to_input(images[B:2 * B]).to(device), labels[B:2 * B].to(device)
    model = ResNet32(width=cfg["width"]).to(device)
    vnet = WeightingNet(cfg["hidden"]).to(device)
    method = cfg["method"]
    trainer = MWNTrainer(model, vnet, "baseline" if method == "plain" else method,
                         population=cfg["population"], seed=0)
    times = []
    with PeakMemory(device) as mem:
        for i in range(cfg["warmup"] + cfg["repeats"]):
            dt, _ = timed(lambda: trainer.iteration(x, y, xm, ym), device)
            if i >= cfg["warmup"]:
                times.append(dt)
    return {**cfg, "peak_mib": mem.peak_bytes / 2**20, "median_s": median(times),
            "params": count(model), "hyperparams": count(vnet)}


def run_worker(cfg):
    return ab.run_worker(__file__, cfg)


def table(rows, key, title):
    return ab.table(rows, key, title, METHOD_ORDER, "plain")


def plot(results, out, device_label):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ab.plot_vs_size(axes, results["model_size"], METHOD_ORDER, ("peak_mib", "median_s"), COLORS, LABELS,
                    xlabel="model parameters (millions): ResNet-32 width x1..x5")
    axes[0].set_ylabel("peak memory per iteration (MiB)")
    axes[1].set_ylabel("time per iteration (s)")
    fig.suptitle(f"Meta-Weight-Net iteration, memory and time vs model size ({device_label})")
    fig.tight_layout()
    fig.savefig(out / "model_size.png", dpi=130)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (name, key, xlabel) in zip(axes, [("population", "population", "population K"),
                                               ("hyperparameters", "hyperparams", "number of hyperparameters")]):
        rows = results[name]
        for m in METHOD_ORDER:
            pts = sorted((r[key], r["peak_mib"]) for r in rows if r["method"] == m)
            if len(pts) == 1 and key == "population":  # does not depend on K: a level line
                ax.axhline(pts[0][1], color=COLORS[m], ls="--", label=LABELS[m] + " (no K)")
            elif pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", color=COLORS[m], label=LABELS[m])
        ax.set_xscale("log", base=2 if key == "population" else 10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("peak memory per iteration (MiB)")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Memory vs population and vs hyperparameter count ({device_label})")
    fig.tight_layout()
    fig.savefig(out / "population_hyper.png", dpi=130)


def main_ranks(args, argv):
    import torch
    from tqdm import tqdm

    import ranks

    batch = args.batch_size or (100 if args.device.startswith("cuda") else 16)
    rows = []
    for cfg in tqdm([dict(device=args.device, batch_size=batch, width=w, hidden=100,
                          population=2, warmup=args.warmup, repeats=args.repeats, method=m)
                     for w in args.widths for m in ranks.METHODS], desc=f"{args.ranks} ranks"):
        rows.append(ranks.run(cfg, args.ranks))
    meta = {"device": ab.device_label(args.device), "torch": torch.__version__,
            "batch_size_per_rank": batch, "ranks": args.ranks, "date": time.strftime("%Y-%m-%d"),
            "command": " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:]))}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mwn_ranks.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    report = (f"# MWN meta-step under DDP, {args.ranks} ranks: {meta['device']}, torch "
              f"{meta['torch']}, batch {batch} per rank, {meta['date']}\n\n" + ranks.table(rows))
    (args.out / "mwn_ranks.md").write_text(report + "\n")
    print(report)
    ranks.plot(rows, args.out / "mwn_ranks.png")
    print("wrote", args.out / "mwn_ranks.json", args.out / "mwn_ranks.png")


def main(argv=None):
    args = parse_args(argv)
    if args.ranks:
        return main_ranks(args, argv)
    if ab.other_mode(args, worker, lambda saved: plot(saved, args.out, saved["meta"]["device"]),
                     args.out / "mwn_bench.json"):
        return
    import torch
    from tqdm import tqdm

    batch = args.batch_size or (100 if args.device.startswith("cuda") else 32)
    base = dict(device=args.device, batch_size=batch, width=1, hidden=100, population=2,
                warmup=args.warmup, repeats=args.repeats, threads=args.threads)
    plan = {"model_size": [dict(base, width=w, method=m) for w in args.widths for m in args.methods],
            "population": [dict(base, width=args.population_width, population=k, method=m)
                           for k in args.populations for m in args.methods
                           if m in ("evograd", "evograd-reference")]
                          + [dict(base, width=args.population_width, method=m) for m in args.methods
                             if m in ("plain", "t1t2")],
            "hyperparameters": [dict(base, hidden=h, method=m) for h in args.hidden for m in args.methods]}
    total = sum(len(v) for v in plan.values())
    results = {k: [] for k in plan}
    with tqdm(total=total, desc="fresh-process runs") as bar:
        for name, cfgs in plan.items():
            for cfg in cfgs:
                bar.set_postfix_str(f"{name}: {cfg['method']} w{cfg['width']} K{cfg['population']} h{cfg['hidden']}")
                results[name].append(run_worker(cfg))
                bar.update()

    device_label = ab.device_label(args.device)
    meta = {"device": device_label, "torch": torch.__version__, "batch_size": batch,
            "date": time.strftime("%Y-%m-%d"), "command": " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:]))}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mwn_bench.json").write_text(json.dumps({"meta": meta, **results}, indent=1))
    text = [f"# MWN A/B benchmark: {device_label}, torch {torch.__version__}, batch {batch}, {meta['date']}",
            table(results["model_size"], "params", "## model size (ResNet-32 width x1..x5)"),
            table(results["population"], "population", f"## population K (width {args.population_width}; plain and T1-T2 do not depend on K)"),
            table(results["hyperparameters"], "hyperparams", "## hyperparameters (weighting-net width)")]
    report = "\n\n".join(text)
    (args.out / "mwn_bench.txt").write_text(report + "\n")
    print(report)
    plot(results, args.out, device_label)
    print("wrote", args.out / "mwn_bench.json", args.out / "model_size.png", args.out / "population_hyper.png")


if __name__ == "__main__":
    main()
