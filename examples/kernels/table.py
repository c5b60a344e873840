#!/usr/bin/env python3
"""The C kernels' speed table: for each kernel, storage type and noise kind,
GB/s (bytes read + written per second) at 16M elements on 2 threads, the
percentage of a copy of the same bytes measured in the same run, and
instructions per element counted by callgrind (stable on a shared machine,
unlike the clock).

The driver (kernel_driver.c) calls the C ABI directly, so one table can be
made for any build of libevograd_kernels: the current one (--library), or
the sources of an older commit compiled as CMake's Release build compiles
them (--ref). With --before, the table shows both side by side and draws
them.

    .venv/bin/python examples/kernels/table.py --ref 4644828 --out results/kernels_c_before
    .venv/bin/python examples/kernels/table.py --library build/main \\
        --before results/kernels_c_before/kernels_c.json --out results/kernels_c
"""
import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
KERNELS = [("perturb", 1), ("combine", 2), ("combine", 8), ("project", 2), ("project", 8)]
DTYPES = ["f32", "f64", "f16", "bf16"]
BYTES = {"f32": 4, "f64": 8, "f16": 2, "bf16": 2}


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def library_from_ref(ref, work):
    """libevograd_kernels.so from the C sources of git ref `ref`, compiled
    with the flags of CMake's Release build of the library (-O3, C11, PIC,
    hidden visibility)."""
    src = work / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "csrc", "include"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    gen = src / "gen" / "evograd"
    gen.mkdir(parents=True)
    (gen / "version.h").write_text('#define EVOGRAD_VERSION_STRING "ref"\n')
    sources = [str(p) for p in sorted((src / "csrc").rglob("*.c"))]
    out = work / "lib"
    out.mkdir()
    sh(["cc", "-O3", "-DNDEBUG", "-std=c11", "-fPIC", "-shared", "-fvisibility=hidden",
        f"-I{src / 'include'}", f"-I{src / 'gen'}", f"-I{src / 'csrc'}", *sources,
        "-o", str(out / "libevograd_kernels.so"), "-lm"])
    return out


def build_driver(libdir, work):
    exe = work / "kernel_driver"
    sh(["cc", "-O2", "-std=c11", "-D_POSIX_C_SOURCE=200809L", f"-I{ROOT / 'include'}",
        str(HERE / "kernel_driver.c"), f"-L{libdir}", f"-Wl,-rpath,{libdir}", "-levograd_kernels",
        "-lpthread", "-o", str(exe)])
    return exe


def instructions(exe, cfg, log2n):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "cg.out"
        subprocess.run(["valgrind", "--tool=callgrind", "--toggle-collect=evograd_*",
                        f"--callgrind-out-file={out}", str(exe), "once", *cfg, str(log2n), "1"],
                       check=True, capture_output=True)
        totals = re.search(r"^(?:totals|summary):\s*(\d+)", out.read_text(), re.M)
        return int(totals.group(1)) / (1 << log2n)


def measure(exe, args):
    rows = []
    for noise in ("sign", "gauss"):
        for dtype in DTYPES:
            for kernel, k in KERNELS:
                cfg = [kernel, dtype, noise, str(k)]
                t_kernel, t_copy = map(float, sh([str(exe), "time", *cfg, str(args.log2n), str(args.threads)]).split())
                nbytes = (1 << args.log2n) * BYTES[dtype] * (1 if kernel == "project" else 2)
                copy_bytes = (1 << args.log2n) * BYTES[dtype] * 2
                row = {"kernel": kernel, "population": k, "dtype": dtype, "noise": noise,
                       "gb_per_s": nbytes / t_kernel / 1e9, "copy_gb_per_s": copy_bytes / t_copy / 1e9,
                       "instructions_per_element": instructions(exe, cfg, args.count_log2n)}
                row["percent_of_copy"] = 100 * row["gb_per_s"] / row["copy_gb_per_s"]
                rows.append(row)
                print(f"{noise:5} {dtype:4} {kernel:7} K={k}: {row['gb_per_s']:7.2f} GB/s "
                      f"{row['percent_of_copy']:4.0f}% of copy, {row['instructions_per_element']:8.1f} instr/element",
                      flush=True)
    return rows


def key(r):
    return (r["noise"], r["dtype"], r["kernel"], r["population"])


def label(r):
    return r["kernel"] + (f" K={r['population']}" if r["kernel"] != "perturb" else "")


def report(result, before):
    meta = result["meta"]
    old = {key(r): r for r in before["rows"]} if before else {}
    lines = [f"# C kernels, {1 << meta['log2n']} elements, {meta['threads']} threads: {meta['machine']}, "
             f"{meta['compiler']}, {meta['date']}; library: {meta['library']}"]
    if before:
        lines.append(f"# before: {before['meta']['library']}")
        head = (f"{'noise':5} {'dtype':5} {'kernel':11} | {'GB/s before':>11} {'after':>7} | {'% copy before':>13} "
                f"{'after':>5} | {'instr/el before':>15} {'after':>7} | speed-up")
    else:
        head = f"{'noise':5} {'dtype':5} {'kernel':11} | {'GB/s':>7} | {'% copy':>6} | {'instr/el':>8}"
    lines += [head, "-" * len(head)]
    for r in result["rows"]:
        name = f"{r['noise']:5} {r['dtype']:5} {label(r):11}"
        if before:
            o = old[key(r)]
            lines.append(f"{name} | {o['gb_per_s']:11.2f} {r['gb_per_s']:7.2f} | {o['percent_of_copy']:12.0f}% "
                         f"{r['percent_of_copy']:4.0f}% | {o['instructions_per_element']:15.1f} "
                         f"{r['instructions_per_element']:7.1f} | {r['gb_per_s'] / o['gb_per_s']:6.1f}x")
        else:
            lines.append(f"{name} | {r['gb_per_s']:7.2f} | {r['percent_of_copy']:5.0f}% | "
                         f"{r['instructions_per_element']:8.1f}")
    return "\n".join(lines)


def plot(result, before, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    old = {key(r): r for r in before["rows"]} if before else {}
    fig, axes = plt.subplots(1, 2, figsize=(14, 6.5), sharey=True)
    for ax, noise in zip(axes, ("sign", "gauss")):
        rows = [r for r in result["rows"] if r["noise"] == noise]
        labels = [f"{r['dtype']} {label(r)}" for r in rows]
        y = range(len(rows))
        if before:
            ax.barh([i + 0.2 for i in y], [old[key(r)]["percent_of_copy"] for r in rows], height=0.4,
                    color="#bbbbbb", label="before")
        ax.barh([i - 0.2 for i in y], [r["percent_of_copy"] for r in rows], height=0.4, color="#1f77b4",
                label="after" if before else "kernel")
        ax.set_yticks(list(y))
        ax.set_yticklabels(labels, fontsize=8)
        ax.invert_yaxis()
        ax.axvline(100, color="k", lw=0.8)
        ax.axvline(70, color="k", lw=0.8, ls=":")
        ax.set_xlabel("% of a copy of the same bytes (same run)")
        ax.set_title(f"{noise} noise")
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(loc="lower right")
    m = result["meta"]
    fig.suptitle(f"C kernels at {1 << m['log2n']} elements, {m['threads']} threads ({m['machine']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--library", type=Path, help="directory holding libevograd_kernels.so (e.g. build/main)")
    src.add_argument("--ref", help="git commit whose C sources to compile and measure")
    p.add_argument("--before", type=Path, help="an earlier run's kernels_c.json, shown side by side")
    p.add_argument("--log2n", type=int, default=24, help="elements timed: 2^LOG2N (default 16M)")
    p.add_argument("--count-log2n", type=int, default=16, help="elements counted under callgrind")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/kernels_c"))
    args = p.parse_args()
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed for the instruction counts (Debian package valgrind)")
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        libdir = args.library.resolve() if args.library else library_from_ref(args.ref, work)
        label = str(args.library) if args.library else f"commit {args.ref}"
        if args.library:
            label += " @ " + sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
        exe = build_driver(libdir, work)
        rows = measure(exe, args)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "compiler": sh(["cc", "--version"]).splitlines()[0], "date": time.strftime("%Y-%m-%d"),
            "log2n": args.log2n, "count_log2n": args.count_log2n, "threads": args.threads, "library": label}
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    if cpu:
        meta["machine"] = f"{cpu.group(1)}, {os.cpu_count()} cores"
    result = {"meta": meta, "rows": rows}
    before = json.loads(args.before.read_text()) if args.before else None
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels_c.json").write_text(json.dumps(result, indent=1))
    text = report(result, before)
    (args.out / "kernels_c.txt").write_text(text + "\n")
    plot(result, before, args.out / "kernels_c.png")
    print(text)


if __name__ == "__main__":
    main()
