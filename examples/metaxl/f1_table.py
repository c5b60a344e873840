#!/usr/bin/env python3
"""Trains each MetaXL method for several seeds and writes the target-language
F1 table (JSON and Markdown) that docs/results.md quotes.

    .venv/bin/python examples/metaxl/f1_table.py --seeds 0 1 2 --out results/metaxl_f1
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
    p.add_argument("--methods", nargs="+", default=["jt", "t1t2", "evograd"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--out", type=Path, default=Path("results/metaxl_f1"))
    args = p.parse_args()
    grid = [(f"{method}_seed{seed}", ["--method", method, "--seed", str(seed),
                                      "--iterations", str(args.iterations)])
            for method in args.methods for seed in args.seeds]
    runs = run_grid(train.main, grid, args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [f"Target-language entity F1 (%) on 1000 held-out sentences, {args.iterations} iterations, "
             f"seeds {args.seeds}, {time.strftime('%Y-%m-%d')}", "",
             "| method | F1 mean ± std | per seed |", "|---|---|---|"]
    for method in args.methods:
        scores = [100 * r["f1"] for r in runs if r["method"] == method]
        lines.append(f"| {method} | {mean_sd(scores)} | " + ", ".join(f"{s:.2f}" for s in scores) + " |")
    write_table(lines, runs, args.out, "f1")


if __name__ == "__main__":
    main()
