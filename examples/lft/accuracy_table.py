#!/usr/bin/env python3
"""Trains each LFT method and writes the held-out-domain accuracy table
(JSON and Markdown) that docs/results.md quotes.

    .venv/bin/python examples/lft/accuracy_table.py --out results/lft_accuracy
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
    p.add_argument("--methods", nargs="+", default=["none", "ft-fixed", "t1t2", "evograd"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--iterations", type=int, default=150)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--n-query", type=int, default=8)
    p.add_argument("--test-episodes", type=int, default=300)
    p.add_argument("--out", type=Path, default=Path("results/lft_accuracy"))
    args = p.parse_args()
    common = ["--iterations", str(args.iterations), "--size", str(args.size), "--n-query", str(args.n_query),
              "--test-episodes", str(args.test_episodes)]
    grid = [(f"{m}_seed{s}", ["--method", m, "--seed", str(s)] + common) for m in args.methods for s in args.seeds]
    runs = run_grid(train.main, grid, args.out)
    lines = [f"5-way accuracy (%) on the held-out digits domain, ResNet-10 RelationNet trained 5-shot for "
             f"{args.iterations} iterations on {args.size}x{args.size} images ({args.n_query} queries per class); "
             f"{args.test_episodes} test episodes of 16 queries per class per setting, mean ± 95% CI; "
             f"seeds {args.seeds}, {time.strftime('%Y-%m-%d')}",
             "", "| method | 1-shot | 5-shot |", "|---|---|---|"]
    for m in args.methods:
        for r in (r for r in runs if r["method"] == m):
            cells = [f"{100 * r['by_shots'][k]['accuracy']:.2f} ± {100 * r['by_shots'][k]['ci95']:.2f}"
                     for k in ("1-shot", "5-shot")]
            name = m if len(args.seeds) == 1 else f"{m} (seed {r['seed']})"
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(args.seeds) > 1:  # then the spread between seeds, which dominates here
        lines += ["", f"mean ± standard deviation over seeds {args.seeds}:", "",
                  "| method | 1-shot | 5-shot |", "|---|---|---|"]
        for m in args.methods:
            cells = [mean_sd([100 * r["by_shots"][k]["accuracy"] for r in runs if r["method"] == m])
                     for k in ("1-shot", "5-shot")]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    write_table(lines, runs, args.out, "accuracy")


if __name__ == "__main__":
    main()
