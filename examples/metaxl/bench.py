#!/usr/bin/env python3
"""A/B benchmark of one MetaXL iteration at the XLM-R-base-like shape (12
layers, hidden 768, 12 heads, FFN 3072, vocabulary 30k): joint training,
T1-T2, EvoGrad perturbing the head (the paper's choice), EvoGrad perturbing
every encoder parameter, and estimator="jvp" (T1-T2's hypergradient over the
whole encoder). The encoder's gradients are freed before each meta-step.
Each method in a fresh process; prints a table, writes JSON and a PNG.

    .venv/bin/python examples/metaxl/bench.py --out results/metaxl_bench_cpu
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

METHODS = ["jt", "t1t2", "evograd", "evograd-all", "jvp"]
LABELS = {"jt": "joint training\n(no RTN)", "t1t2": "MetaXL\nT1-T2",
          "evograd": "MetaXL EvoGrad\n(head)", "evograd-all": "MetaXL EvoGrad\n(all params)",
          "jvp": "MetaXL EvoGrad jvp\n(all params)"}
COLORS = {"jt": "tab:gray", "t1t2": "tab:red", "evograd": "tab:green", "evograd-all": "tab:olive",
          "jvp": "tab:blue"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/metaxl_bench"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--seq-len", type=int, default=None, help="default: 32 on CPU, 128 on CUDA")
    p.add_argument("--batch", type=int, default=None,
                   help="source and target sentences per iteration each (default: 4 on CPU, 16 on CUDA)")
    p.add_argument("--vocab", type=int, default=30000)
    p.add_argument("--methods", nargs="*", default=METHODS, choices=METHODS)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--replot", action="store_true", help="redraw the plot from OUT/metaxl_bench.json")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def worker(cfg):
    import torch

    from common.measure import PeakMemory, median, timed
    from methods import MetaXLTrainer
    from model import RTN, xlmr_base_like

    torch.manual_seed(0)
    device = torch.device(cfg["device"])
    model = xlmr_base_like(cfg["vocab"]).to(device)
    rtn = RTN(768).to(device)
    method = cfg["method"]
    trainer = MetaXLTrainer(model, rtn, "evograd" if method.startswith("evograd") else method,
                            lr=2e-5, perturb="all" if method == "evograd-all" else "head")
    g = torch.Generator().manual_seed(0)
    B, L = cfg["batch"], cfg["seq_len"]

    def batch():
        tokens = torch.randint(1, cfg["vocab"], (B, L), generator=g).to(device)
        tags = torch.randint(0, 9, (B, L), generator=g).to(device)
        return tokens, tags, torch.ones(B, L, dtype=torch.bool, device=device)

    src, tgt = batch(), batch()
    times = []
    with PeakMemory(device) as mem:
        for i in range(cfg["warmup"] + cfg["repeats"]):
            dt, _ = timed(lambda: trainer.iteration(src, tgt), device)
            if i >= cfg["warmup"]:
                times.append(dt)
    return {**cfg, "peak_mib": mem.peak_bytes / 2**20, "median_s": median(times),
            "params": sum(p.numel() for p in model.parameters()),
            "hyperparams": sum(p.numel() for p in rtn.parameters())}


def plot(results, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["method"]: r for r in results["rows"]}
    names = [m for m in METHODS if m in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, field, label in ((axes[0], "peak_mib", "peak memory per iteration (MiB)"),
                             (axes[1], "median_s", "time per iteration (s)")):
        vals = [rows[m][field] for m in names]
        bars = ax.bar([LABELS[m] for m in names], vals, color=[COLORS[m] for m in names])
        for b, v in zip(bars, vals):
            ax.text(b.get_x() + b.get_width() / 2, v, f"{v / vals[0]:.2f}x", ha="center", va="bottom", fontsize=9)
        ax.set_ylabel(label)
        ax.tick_params(axis="x", labelsize=8)
    m = results["meta"]
    fig.suptitle(f"MetaXL iteration, XLM-R-base-like encoder ({m['params'] / 1e6:.0f}M params, RTN "
                 f"{m['hyperparams'] / 1e3:.0f}k), batch {m['batch']}+{m['batch']} x {m['seq_len']} tokens, {m['device']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "metaxl_bench.png", dpi=130)


def main(argv=None):
    args = parse_args(argv)
    if ab.other_mode(args, worker, lambda saved: plot(saved, args.out), args.out / "metaxl_bench.json"):
        return
    import torch
    from tqdm import tqdm

    cuda = args.device.startswith("cuda")
    cfg = dict(device=args.device, vocab=args.vocab, warmup=args.warmup, repeats=args.repeats,
               seq_len=args.seq_len or (128 if cuda else 32), batch=args.batch or (16 if cuda else 4))
    rows = [ab.run_worker(__file__, dict(cfg, method=m)) for m in tqdm(args.methods, desc="fresh-process runs")]
    for r in rows:
        r["config"] = "xlmr-base-like"
    meta = {"device": ab.device_label(args.device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "seq_len": cfg["seq_len"], "batch": cfg["batch"], "params": rows[0]["params"],
            "hyperparams": rows[0]["hyperparams"],
            "command": " ".join([os.path.relpath(__file__)] + (argv or sys.argv[1:]))}
    args.out.mkdir(parents=True, exist_ok=True)
    results = {"meta": meta, "rows": rows}
    (args.out / "metaxl_bench.json").write_text(json.dumps(results, indent=1))
    report = (f"# MetaXL A/B: {meta['device']}, torch {meta['torch']}, {meta['date']}, "
              f"{meta['params'] / 1e6:.1f}M encoder params, RTN {meta['hyperparams']} hyperparameters, "
              f"{cfg['batch']} source + {cfg['batch']} target sentences of {cfg['seq_len']} tokens\n\n"
              + ab.table(rows, "config", "## one iteration", METHODS, "jt"))
    (args.out / "metaxl_bench.txt").write_text(report + "\n")
    print(report)
    plot(results, args.out)
    print("wrote", args.out / "metaxl_bench.json", args.out / "metaxl_bench.png")


if __name__ == "__main__":
    main()
