#!/usr/bin/env python3
"""EvoGrad on the paper's 1-D problem (section 4.1): the estimated
hypergradient against the true one for several population sizes, and (x, lam)
trajectories with EvoGrad vs the true hypergradient over the validation loss.

    .venv/bin/python examples/illustration_1d/main.py --out results/1d
"""
import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

import common  # noqa: E402,F401  (makes evograd importable)
import problem  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("results/illustration_1d"), help="folder for PNGs and JSON")
    p.add_argument("--populations", type=int, nargs="+", default=[2, 10, 100], help="K values to compare")
    p.add_argument("--repetitions", type=int, default=100, help="random x per lambda")
    p.add_argument("--sigma", type=float, default=1.0, help="noise scale (paper: 1)")
    p.add_argument("--temperature", type=float, default=0.5, help="softmax temperature (paper: 0.5)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def main():
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lams = np.round(np.linspace(0.1, 2.0, 20), 3).tolist()
    true = [problem.true_hypergradient(l) for l in lams]
    curves = {}
    with tqdm(total=len(lams) * len(args.populations), desc="hypergradient curves") as bar:
        for K in args.populations:
            m, s = problem.estimate_curve(lams, K, args.repetitions, args.sigma, args.temperature,
                                          args.seed, progress=bar.update)
            curves[K] = {"mean": m, "std": s, "correlation": float(np.corrcoef(m, true)[0, 1])}

    fig, axes = plt.subplots(1, len(args.populations), figsize=(4.2 * len(args.populations), 3.6),
                             sharey=True)
    for ax, K in zip(np.atleast_1d(axes), args.populations):
        m, s = np.array(curves[K]["mean"]), np.array(curves[K]["std"])
        ax.fill_between(lams, m - s, m + s, color="tab:orange", alpha=0.25, label="EvoGrad ± std")
        ax.plot(lams, m, color="tab:orange", lw=2, label="EvoGrad mean")
        ax.plot(lams, true, "k--", lw=1.5, label=r"true $(\lambda-1)/(\lambda+1)^3$")
        ax.axhline(0, color="grey", lw=0.5)
        ax.set_title(f"K = {K}   (corr {curves[K]['correlation']:.3f})")
        ax.set_xlabel(r"$\lambda$")
    np.atleast_1d(axes)[0].set_ylabel("hypergradient")
    np.atleast_1d(axes)[0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"EvoGrad vs true hypergradient, {args.repetitions} random x per λ "
                 f"(gauss noise, σ={args.sigma}, τ={args.temperature})")
    fig.tight_layout()
    fig.savefig(args.out / "hypergradient.png", dpi=130)

    starts = [(-0.5, 1.8), (0.0, 0.2), (1.5, 1.5), (2.0, 0.4), (0.8, 1.0)]
    paths = {"evograd": [], "true": []}
    for i, (x0, l0) in enumerate(tqdm(starts, desc="trajectories")):
        paths["evograd"].append(problem.trajectory(x0, l0, hypergradient="evograd",
                                                   seed=args.seed + 100 * i,
                                                   sigma=args.sigma, temperature=args.temperature))
        paths["true"].append(problem.trajectory(x0, l0, hypergradient="true"))
    fig, ax = plt.subplots(figsize=(6, 4.6))
    xs, ls = np.meshgrid(np.linspace(-1, 2.5, 200), np.linspace(0, 2.2, 200))
    cs = ax.contourf(xs, ls, (xs - 0.5) ** 2, levels=30, cmap="Blues_r")
    fig.colorbar(cs, label=r"validation loss $(x-0.5)^2$")
    for name, style in (("true", dict(color="black", ls="--", marker="o", ms=3)),
                        ("evograd", dict(color="tab:orange", marker="o", ms=4))):
        for j, path in enumerate(paths[name]):
            p = np.array(path)
            ax.plot(p[:, 0], p[:, 1], label=("EvoGrad (K=100)" if name == "evograd" else "true hypergradient")
                    if j == 0 else None, **style)
    ax.set_xlabel("x")
    ax.set_ylabel(r"$\lambda$")
    ax.set_title("5 SGD steps (lr 0.1) from 5 starts")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "trajectories.png", dpi=130)

    summary = {"lambdas": lams, "true": true, "curves": {str(k): v for k, v in curves.items()},
               "trajectories": paths, "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "illustration_1d.json").write_text(json.dumps(summary, indent=1))
    for K in args.populations:
        print(f"K={K:4d}: correlation with the true hypergradient {curves[K]['correlation']:.4f}")
    print("wrote", args.out / "hypergradient.png", args.out / "trajectories.png")


if __name__ == "__main__":
    main()
