#!/usr/bin/env python3
"""The CPU kernels measured two ways, side by side in one run: through the C
ABI (kernel_driver.c: one list, split over pthreads as the operators split
it) and through the operators (torch.ops.evograd.*: the list as 4 tensors,
torch's threads). Each next to a copy of the same bytes on the same threads
in the same process; float32, sign noise, K = 2. The share of a copy is
bandwidth over copy bandwidth, counting the bytes each must move: perturb
and combine read and write the list (as a copy does), project only reads
it, so its share is copy time / (2 x project time).

Rounds alternate the two layers so that drift on a shared machine hits both
alike; the table gives the median over rounds.

    .venv/bin/python examples/kernels/layers.py --library build/main --out results/kernels_layers
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from common import ab  # noqa: E402  (first: it makes evograd importable)
import evograd  # noqa: E402
from table import build_driver, sh  # noqa: E402

KERNELS = ["perturb", "combine", "project"]
TARGETS = {"perturb": 0.7, "combine": 0.5, "project": 0.5}  # what the kernels aim at on AVX2
K, SIGMA, TAU = 2, 1e-3, 0.05


def share(kernel, kernel_s, copy_s):
    return copy_s / kernel_s / (2 if kernel == "project" else 1)


def c_layer(exe, kernel, log2n, threads):
    kernel_s, copy_s = map(float, sh([str(exe), "time", kernel, "f32", "sign", str(K), str(log2n),
                                      str(threads)]).split())
    return kernel_s, copy_s


def operator_layer(kernel, n, repeats):
    """Median seconds of the operator and of a copy of the same bytes."""
    torch.manual_seed(0)
    xs = list(torch.randn(n).chunk(4))
    ys = [torch.empty_like(x) for x in xs]
    flat, flat_out = torch.randn(n), torch.empty(n)
    losses = torch.tensor([0.1, 0.2], dtype=torch.float64)
    call = {"perturb": lambda: evograd.perturb_into(xs, ys, 1, 0, SIGMA, "sign"),
            "combine": lambda: evograd.combine_into(xs, losses, ys, TAU, 1, SIGMA, "sign"),
            "project": lambda: evograd.project(xs, 1, K, SIGMA, "sign")}[kernel]

    def median(fn):
        fn()
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    with torch.no_grad():
        return median(call), median(lambda: flat_out.copy_(flat))


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def plot(rows, meta, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted({r["elements"] for r in rows})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5 * len(sizes), 4), sharey=True, squeeze=False)
    for ax, n in zip(axes[0], sizes):
        xs = range(len(KERNELS))
        for off, layer, color in ((-0.2, "c", "tab:blue"), (0.2, "operators", "tab:orange")):
            vals = [next(r for r in rows if r["elements"] == n and r["kernel"] == k)[layer]["share"]
                    for k in KERNELS]
            ax.bar([x + off for x in xs], vals, width=0.4, color=color,
                   label="C ABI" if layer == "c" else "operators")
        for x, k in zip(xs, KERNELS):
            ax.hlines(TARGETS[k], x - 0.45, x + 0.45, colors="k", linestyles="dashed")
        ax.set_xticks(list(xs), [k + ("" if k == "perturb" else f" K={K}") for k in KERNELS])
        ax.set_title(f"{n / 2**20:.0f}M float32 elements")
        ax.axhline(1.0, color="grey", lw=0.5)
    axes[0][0].set_ylabel("share of a copy (dashed: target)")
    axes[0][0].legend()
    fig.suptitle(f"{meta['cpu']} ({meta['isa']} kernels), {meta['threads']} threads, torch {meta['torch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--library", type=Path, default=Path("build/main"),
                   help="build folder holding libevograd_kernels.so (the C layer)")
    p.add_argument("--log2-sizes", type=int, nargs="*", default=[24, 26])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="alternating C / operator rounds per row")
    p.add_argument("--repeats", type=int, default=9, help="operator calls timed per round")
    p.add_argument("--out", type=Path, default=Path("results/kernels_layers"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="evograd_layers_"))  # the driver binary: not a result
    exe = build_driver(args.library.resolve(), work)
    rows = []
    jobs = [(lg, k) for lg in args.log2_sizes for k in KERNELS]
    for lg, kernel in tqdm(jobs, desc="kernels", dynamic_ncols=True):
        c, op = [], []
        for _ in range(args.rounds):
            c.append(c_layer(exe, kernel, lg, args.threads))
            op.append(operator_layer(kernel, 1 << lg, args.repeats))
        row = {"kernel": kernel, "elements": 1 << lg}
        for name, runs in (("c", c), ("operators", op)):
            kernel_s = statistics.median(r[0] for r in runs)
            copy_s = statistics.median(r[1] for r in runs)
            row[name] = {"ms": 1e3 * kernel_s, "copy_ms": 1e3 * copy_s, "share": share(kernel, kernel_s, copy_s),
                         "rounds": [[a, b] for a, b in runs]}
        rows.append(row)
    flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    meta = {"cpu": cpu_model(), "isa": evograd.cpu_kernels(), "avx512f": " avx512f" in flags,
            "threads": args.threads, "torch": torch.__version__, "cc": sh(["cc", "--version"]).splitlines()[0],
            "date": time.strftime("%Y-%m-%d"), "rounds": args.rounds, "K": K, "noise": "sign",
            "command": " ".join([".venv/bin/python", "examples/kernels/layers.py", *sys.argv[1:]])}
    (args.out / "kernels_layers.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    lines = [f"# float32, sign noise, K={K}: {meta['cpu']}, {meta['isa']} kernels "
             f"({'AVX-512' if meta['avx512f'] else 'no AVX-512'}), {meta['threads']} threads, torch {meta['torch']}, "
             f"{meta['cc']}, {meta['date']}; median of {args.rounds} rounds",
             f"# {meta['command']}",
             "| kernel | elements | C ABI ms | C ABI share of copy | operators ms | operators share of copy "
             "| operators / C time | target |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = r["kernel"] + ("" if r["kernel"] == "perturb" else f" K={K}")
        lines.append(f"| {name} | {r['elements'] // 2**20}M | {r['c']['ms']:.2f} | {r['c']['share']:.2f} | "
                     f"{r['operators']['ms']:.2f} | {r['operators']['share']:.2f} | "
                     f"{r['operators']['ms'] / r['c']['ms']:.2f} | {TARGETS[r['kernel']]} |")
    report = "\n".join(lines)
    (args.out / "kernels_layers.txt").write_text(report + "\n")
    plot(rows, meta, args.out / "kernels_layers.png")
    print(report)


if __name__ == "__main__":
    main()
