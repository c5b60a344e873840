#!/usr/bin/env python3
"""`make demo`: the point of evograd in a few minutes on 2 CPU cores.

1. Meta-Weight-Net on Fashion-MNIST with 40% uniform label noise: `baseline`
   (plain training on noisy labels) and `evograd` (weighting network
   meta-learned with this plugin), same iterations, same seed; test accuracy.
2. One MWN iteration of T1-T2 vs EvoGrad (and plain training), each in a fresh
   process: peak memory and time, with ratios.

Flags scale it up (e.g. --iterations 2000 --width 2); the full benchmark is
examples/mwn/bench.py and the accuracy table examples/mwn/accuracy_table.py.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "mwn"))
sys.path.insert(0, HERE)

import bench  # noqa: E402
import train  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=1, help="ResNet-32 width for training and the A/B table")
    p.add_argument("--noise-rate", type=float, default=0.4)
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    common = ["--iterations", str(args.iterations), "--batch-size", str(args.batch_size),
              "--width", str(args.width), "--noise-rate", str(args.noise_rate),
              "--test-size", str(args.test_size), "--seed", str(args.seed)]
    print(f"== Meta-Weight-Net, Fashion-MNIST, {100 * args.noise_rate:.0f}% label noise, "
          f"ResNet-32 x{args.width}, {args.iterations} iterations of batch {args.batch_size}")
    runs = {m: train.main(common + ["--method", m]) for m in ("baseline", "evograd")}

    print("\n== One MWN iteration, each method in a fresh process (CPU, batch 32)")
    cfg = dict(device="cpu", batch_size=32, width=args.width, hidden=100, population=2,
               warmup=1, repeats=3, threads=0)
    ab = {m: bench.run_worker(dict(cfg, method=m)) for m in ("plain", "t1t2", "evograd")}

    print("\n" + "=" * 72)
    print(f"test accuracy after {args.iterations} iterations at {100 * args.noise_rate:.0f}% label noise:")
    for m, r in runs.items():
        print(f"  {m:<10} {100 * r['test_accuracy']:6.2f}%   ({r['median_iteration_s']:.2f} s/iteration)")
    print("\nmeta-step cost (one full MWN iteration; ratios to plain training):")
    print(f"  {'method':<8} {'peak memory':>14} {'time':>14}")
    for m, r in ab.items():
        ratio = "" if m == "plain" else f" {r['peak_mib'] / ab['plain']['peak_mib']:4.1f}x"
        tratio = "" if m == "plain" else f" {r['median_s'] / ab['plain']['median_s']:4.1f}x"
        print(f"  {m:<8} {r['peak_mib']:7.0f} MiB{ratio:>6} {r['median_s']:7.3f} s{tratio:>6}")
    t, e = ab["t1t2"], ab["evograd"]
    print(f"\nEvoGrad vs T1-T2: {t['peak_mib'] / e['peak_mib']:.1f}x less memory, "
          f"{t['median_s'] / e['median_s']:.1f}x faster per iteration.")
    print("=" * 72)


if __name__ == "__main__":
    main()
