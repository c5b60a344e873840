#!/usr/bin/env python3
"""Runs MWN training for each method x noise rate x seed and writes the test
accuracy table (JSON and Markdown) that docs/results.md quotes.

    .venv/bin/python examples/mwn/accuracy_table.py --iterations 500 --out results/mwn_accuracy
"""
import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import train  # noqa: E402
from common.grid import mean_sd, run_grid, write_table  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", default=["baseline", "t1t2", "evograd"])
    p.add_argument("--noise-rates", type=float, nargs="+", default=[0.0, 0.4])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=1)
    p.add_argument("--scale", choices=["t1t2", "none"], default="t1t2", help="EvoGrad's hypergradient scale")
    p.add_argument("--seed-schedule", choices=["mixed", "consecutive"], default="mixed")
    p.add_argument("--out", type=Path, default=Path("results/mwn_accuracy"))
    args = p.parse_args()
    grid = [(f"{method}_noise{int(100 * rate)}_seed{seed}",
             ["--method", method, "--noise-rate", str(rate), "--seed", str(seed),
              "--iterations", str(args.iterations), "--batch-size", str(args.batch_size),
              "--width", str(args.width), "--scale", args.scale,
              "--seed-schedule", args.seed_schedule])
            for rate in args.noise_rates for method in args.methods for seed in args.seeds]
    runs = run_grid(train.main, grid, args.out)
    lines = [f"Fashion-MNIST test accuracy (%), ResNet-32 x{args.width}, {args.iterations} iterations "
             f"of batch {args.batch_size}, seeds {args.seeds}, {time.strftime('%Y-%m-%d')}", "",
             "| method | " + " | ".join(f"{int(100 * r)}% noise" for r in args.noise_rates) + " |",
             "|---|" + "---|" * len(args.noise_rates)]
    for method in args.methods:
        cells = []
        for rate in args.noise_rates:
            accs = [100 * r["test_accuracy"] for r in runs if r["method"] == method and r["noise_rate"] == rate]
            cells.append(mean_sd(accs))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    write_table(lines, runs, args.out, "accuracy")


if __name__ == "__main__":
    main()
