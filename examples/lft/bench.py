#!/usr/bin/env python3
"""A/B benchmark of one LFT iteration (pseudo-seen model update + FT
meta-update on a pseudo-unseen episode): no FT, T1-T2 and EvoGrad, for
ResNet-10 and ResNet-34 RelationNets, each in a fresh process. Prints a
table, writes JSON and a PNG.

CUDA (the paper's setting): 224x224 images, 5-way 5-shot 16-query episodes
(105 images); `--fit-12gb` also finds the largest of ResNet-10/18/34/50 each
method fits in 12 GB (allocator capped with set_per_process_memory_fraction).
CPU default: 84x84 images, 5-way 5-shot 4-query (45 images).

    .venv/bin/python examples/lft/bench.py --out results/lft_bench_cpu
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

METHODS = ["none", "t1t2", "evograd"]
LABELS = {"none": "no FT (plain)", "t1t2": "LFT, T1-T2", "evograd": "LFT, EvoGrad"}
COLORS = {"none": "tab:gray", "t1t2": "tab:red", "evograd": "tab:green"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/lft_bench"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--depths", type=int, nargs="*", default=[10, 34])
    p.add_argument("--size", type=int, default=None, help="image side (default: 224 CUDA, 84 CPU)")
    p.add_argument("--n-query", type=int, default=None, help="queries per class (default: 16 CUDA, 4 CPU)")
    p.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--fit-12gb", action="store_true", help="CUDA: largest backbone per method within 12 GB")
    p.add_argument("--replot", action="store_true")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(cfg):
    import torch

    from common.measure import PeakMemory, median, timed
    from methods import LFTTrainer
    from models import RelationNet

    device = torch.device(cfg["device"])
    if cfg.get("cap_gib"):
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cfg["cap_gib"] * 2**30 / total), device)
    torch.manual_seed(0)
    model = RelationNet(cfg["depth"]).to(device)
    trainer = LFTTrainer(model, cfg["method"], n_way=5)
    g = torch.Generator().manual_seed(0)
    n = 5 * (5 + cfg["n_query"])

    def episode():
        x = torch.randn(n, 3, cfg["size"], cfg["size"], generator=g).to(device)
        return x[:25], x[25:], torch.arange(5).repeat_interleave(cfg["n_query"]).to(device)

    seen, unseen = episode(), episode()
    times = []
    try:
        with PeakMemory(device) as mem:
            for i in range(cfg["warmup"] + cfg["repeats"]):
                dt, _ = timed(lambda: trainer.iteration(seen, unseen), device)
                if i >= cfg["warmup"]:
                    times.append(dt)
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if "out of memory" not in str(e):
            raise
        return {**cfg, "fits": False}
    return {**cfg, "fits": True, "peak_mib": mem.peak_bytes / 2**20, "median_s": median(times),
            "params": sum(p.numel() for p in model.model_parameters()),
            "hyperparams": sum(p.numel() for p in model.ft_parameters())}


def plot(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    depths = sorted({r["depth"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.8 / len(METHODS)
    for ax, field, label in ((axes[0], "peak_mib", "peak memory per iteration (MiB)"),
                             (axes[1], "median_s", "time per iteration (s)")):
        for j, m in enumerate(METHODS):
            vals = [next((r[field] for r in rows if r["depth"] == d and r["method"] == m), 0) for d in depths]
            ax.bar([i + (j - 1) * width for i in range(len(depths))], vals, width, color=COLORS[m], label=LABELS[m])
        ax.set_xticks(range(len(depths)), [f"ResNet-{d}" for d in depths])
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    m = results["meta"]
    fig.suptitle(f"LFT iteration, 5-way 5-shot {m['n_query']}-query episodes at {m['size']}x{m['size']}, {m['device']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "lft_bench.png", dpi=130)


def main(argv=None):
    args = parse_args(argv)
    if ab.other_mode(args, worker, lambda saved: plot(saved, args.out), args.out / "lft_bench.json"):
        return
    import torch
    from tqdm import tqdm

    cuda = args.device.startswith("cuda")
    base = dict(device=args.device, size=args.size or (224 if cuda else 84),
                n_query=args.n_query or (16 if cuda else 4), warmup=args.warmup, repeats=args.repeats)
    plan = [dict(base, depth=d, method=m) for d in args.depths for m in args.methods]
    rows = [ab.run_worker(__file__, cfg) for cfg in tqdm(plan, desc="fresh-process runs")]
    for r in rows:
        r["backbone"] = f"ResNet-{r['depth']}"
    fit = []
    if args.fit_12gb and cuda:
        for m in args.methods:
            for d in (10, 18, 34, 50):
                r = ab.run_worker(__file__, dict(base, depth=d, method=m, cap_gib=12, repeats=1))
                fit.append({"method": m, "depth": d, "fits": r["fits"],
                            "peak_mib": r.get("peak_mib")})
    meta = {"device": ab.device_label(args.device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "size": base["size"], "n_query": base["n_query"],
            "command": " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:]))}
    results = {"meta": meta, "rows": rows, "fit_12gb": fit}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lft_bench.json").write_text(json.dumps(results, indent=1))
    report = (f"# LFT A/B: {meta['device']}, torch {meta['torch']}, {meta['date']}, 5-way 5-shot "
              f"{base['n_query']}-query episodes at {base['size']}x{base['size']}\n\n"
              + ab.table(rows, "backbone", "## one iteration", METHODS, "none"))
    if fit:
        report += "\n\n## largest backbone within 12 GB\n" + "\n".join(
            f"{m:>8}: " + ", ".join(f"ResNet-{f['depth']} {'fits' if f['fits'] else 'OOM'}"
                                    for f in fit if f["method"] == m) for m in args.methods)
    (args.out / "lft_bench.txt").write_text(report + "\n")
    print(report)
    plot(results, args.out)
    print("wrote", args.out / "lft_bench.json", args.out / "lft_bench.png")


if __name__ == "__main__":
    main()
