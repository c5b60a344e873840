#!/usr/bin/env python3
"""How far a float32 EvoGrad hypergradient lies from the exact one: this
plugin's step and the paper's EvoGrad code (K stacked copies, softmax,
weighted sum, backward), both in float32 on the same MWN batch with the same
noise, against the plugin's step in float64 (which equals the paper's code in
float64 to rounding, checked here too).

Meta-Weight-Net on Fashion-MNIST: ResNet-32, the 301-parameter weighting
network, a noisy batch and a clean meta batch per seed.

    .venv/bin/python examples/mwn/precision.py --out results/mwn_precision
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import data  # noqa: E402
import evograd  # noqa: E402
from evograd.baselines import reference_evograd_step, reference_noise  # noqa: E402
from methods import fast_forward, weighted_loss  # noqa: E402
from models import ResNet32, WeightingNet  # noqa: E402
from torch.nn import functional as F  # noqa: E402


def hypergradients(dtype, seed, batch, args):
    """(plugin, paper's code) lambda-gradients in `dtype`, same model and noise."""
    torch.manual_seed(seed)
    model = ResNet32(width=args.width).to(dtype).train()
    vnet = WeightingNet(100).to(dtype)
    x, y, xm, ym = (t.to(dtype) if t.is_floating_point() else t for t in batch)
    hyper = list(vnet.parameters())
    kw = dict(population=args.population, sigma=args.sigma, temperature=args.temperature)

    meta = evograd.EvoGrad(model, vnet, seed=seed, **kw)
    meta.step(lambda: weighted_loss(model(x), y, vnet), lambda: F.cross_entropy(model(xm), ym))
    plugin = torch.cat([h.grad.flatten() for h in hyper]).double()
    for h in hyper:
        h.grad = None

    params = list(model.parameters())
    forward = lambda Q, inp: fast_forward(model, Q, inp)  # noqa: E731

    noise = reference_noise(params, evograd.step_seed(seed, 0), args.population, args.sigma)
    reference_evograd_step(params, hyper, lambda Q: weighted_loss(forward(Q, x), y, vnet),
                           lambda Q: F.cross_entropy(forward(Q, xm), ym), noise=noise, **kw)
    paper = torch.cat([h.grad.flatten() for h in hyper]).double()
    return plugin, paper


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=10, help="batches, models and noise draws")
    p.add_argument("--width", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--population", type=int, default=2)
    p.add_argument("--sigma", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--data-dir", default=str(data.DEFAULT_ROOT))
    p.add_argument("--out", type=Path, default=Path("results/mwn_precision"))
    args = p.parse_args()

    images, labels = data.load_split("train", args.data_dir)
    noisy, _ = data.uniform_noise(labels, 0.4)
    rows = []
    for seed in tqdm(range(args.seeds), desc="seeds"):
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(labels), generator=g)[: 2 * args.batch_size]
        tr, me = idx[: args.batch_size], idx[args.batch_size:]
        batch = (data.to_input(images[tr]), noisy[tr], data.to_input(images[me]), labels[me])
        exact, paper64 = hypergradients(torch.float64, seed, batch, args)
        plugin32, paper32 = hypergradients(torch.float32, seed, batch, args)
        rel = lambda v: ((v - exact).norm() / exact.norm()).item()
        rows.append({"seed": seed, "plugin_fp32_error": rel(plugin32), "paper_fp32_error": rel(paper32),
                     "paper_fp64_vs_plugin_fp64": rel(paper64)})

    lines = [f"MWN hypergradient, float32 vs the float64 plugin step (relative L2 error), "
             f"ResNet-32 x{args.width}, batch {args.batch_size}, K={args.population}, "
             f"sigma={args.sigma}, tau={args.temperature}; torch {torch.__version__}, "
             f"{platform.machine()} CPU, {time.strftime('%Y-%m-%d')}", "",
             "| seed | plugin float32 | paper's code float32 | paper's code float64 |",
             "|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {100 * r['plugin_fp32_error']:.3f}% | "
                     f"{100 * r['paper_fp32_error']:.3f}% | {r['paper_fp64_vs_plugin_fp64']:.1e} |")
    col = lambda k: [r[k] for r in rows]
    lines += ["", f"plugin float32: {100 * min(col('plugin_fp32_error')):.3f}% to "
              f"{100 * max(col('plugin_fp32_error')):.3f}%; paper's code float32: "
              f"{100 * min(col('paper_fp32_error')):.3f}% to {100 * max(col('paper_fp32_error')):.3f}%; "
              f"float64 codes agree to {max(col('paper_fp64_vs_plugin_fp64')):.1e}"]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "precision.md").write_text("\n".join(lines) + "\n")
    (args.out / "precision.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "torch": torch.__version__,
         "date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
