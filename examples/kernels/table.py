#!/usr/bin/env python3
"""The C kernels' speed table: for each kernel, storage type and noise kind,
GB/s (bytes read + written per second) at 64M elements on 2 threads (large
enough that no cache holds the lists), the percentage of a copy of the same
bytes on the same threads measured right after it, and instructions per
element counted by callgrind (stable on a shared machine, unlike the clock;
valgrind runs no AVX-512, so the count is the AVX2 build's there).

The driver (kernel_driver.c) calls the C ABI directly, so any build of
libevograd_kernels can be measured: the current one (--library) and the
sources of an older commit compiled as CMake's Release build compiles them
(--before-ref). Given both, every row measures both, one after the other,
under the same conditions, and the table and plot show them side by side.

    .venv/bin/python examples/kernels/table.py --library build/main --before-ref 4644828 \\
        --out results/kernels_c
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


def measure(exes, args):
    """rows[i][label] for each library label: GB/s, % of copy, instructions/element."""
    rows = []
    for noise in ("sign", "gauss"):
        for dtype in DTYPES:
            for kernel, k in KERNELS:
                cfg = [kernel, dtype, noise, str(k)]
                row = {"kernel": kernel, "population": k, "dtype": dtype, "noise": noise}
                line = f"{noise:5} {dtype:4} {kernel:7} K={k}:"
                for label, exe in exes.items():
                    t_kernel, t_copy = map(float, sh([str(exe), "time", *cfg, str(args.log2n), str(args.threads)]).split())
                    nbytes = (1 << args.log2n) * BYTES[dtype] * (1 if kernel == "project" else 2)
                    copy_bytes = (1 << args.log2n) * BYTES[dtype] * 2
                    m = {"gb_per_s": nbytes / t_kernel / 1e9, "copy_gb_per_s": copy_bytes / t_copy / 1e9,
                         "instructions_per_element": instructions(exe, cfg, args.count_log2n)}
                    m["percent_of_copy"] = 100 * m["gb_per_s"] / m["copy_gb_per_s"]
                    row[label] = m
                    line += (f"  {label} {m['gb_per_s']:7.2f} GB/s {m['percent_of_copy']:4.0f}% of copy "
                             f"{m['instructions_per_element']:7.1f} instr/el")
                rows.append(row)
                print(line, flush=True)
    return rows


def label(r):
    return r["kernel"] + (f" K={r['population']}" if r["kernel"] != "perturb" else "")


def report(result):
    meta, labels = result["meta"], result["meta"]["labels"]
    lines = [f"# C kernels, {1 << meta['log2n']} elements, {meta['threads']} threads: {meta['machine']}, "
             f"{meta['compiler']}, {meta['date']}"]
    lines += [f"# {lab}: {meta['libraries'][lab]}" for lab in labels]
    head = (f"{'noise':5} {'dtype':5} {'kernel':11} | " + " ".join(f"{'GB/s ' + lab:>12}" for lab in labels)
            + " | " + " ".join(f"{'%copy ' + lab:>12}" for lab in labels)
            + " | " + " ".join(f"{'instr/el ' + lab:>15}" for lab in labels)
            + (" | speed-up" if len(labels) == 2 else ""))
    lines += [head, "-" * len(head)]
    for r in result["rows"]:
        cells = [f"{r['noise']:5} {r['dtype']:5} {label(r):11} |",
                 " ".join(f"{r[lab]['gb_per_s']:12.2f}" for lab in labels), "|",
                 " ".join(f"{r[lab]['percent_of_copy']:11.0f}%" for lab in labels), "|",
                 " ".join(f"{r[lab]['instructions_per_element']:15.1f}" for lab in labels)]
        if len(labels) == 2:
            cells += ["|", f"{r[labels[1]]['gb_per_s'] / r[labels[0]]['gb_per_s']:7.1f}x"]
        lines.append(" ".join(cells))
    return "\n".join(lines)


def plot(result, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    labels = result["meta"]["labels"]
    colors = {"before": "#bbbbbb", "after": "#1f77b4"}
    fig, axes = plt.subplots(1, 2, figsize=(14, 7.5), sharey=True)
    for ax, noise in zip(axes, ("sign", "gauss")):
        rows = [r for r in result["rows"] if r["noise"] == noise]
        y = list(range(len(rows)))
        h = 0.8 / len(labels)
        for j, lab in enumerate(labels):
            ax.barh([i - 0.4 + h * (j + 0.5) for i in y], [r[lab]["percent_of_copy"] for r in rows], height=h,
                    color=colors.get(lab, None), label=lab)
        ax.set_yticks(y)
        ax.set_yticklabels([f"{r['dtype']} {label(r)}" for r in rows], fontsize=8)
        ax.invert_yaxis()
        ax.axvline(100, color="k", lw=0.8)
        ax.axvline(70, color="k", lw=0.8, ls=":")
        ax.axvline(50, color="k", lw=0.8, ls="--")
        ax.set_xlabel("% of a copy of the same bytes (GB/s over copy GB/s)")
        ax.set_title(f"{noise} noise")
        ax.grid(axis="x", alpha=0.3)
    axes[0].legend(loc="lower right")
    m = result["meta"]
    fig.suptitle(f"C kernels at {1 << m['log2n']} elements, {m['threads']} threads ({m['machine']}); "
                 f"dotted: 70%, dashed: 50%")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--library", type=Path, help="directory holding libevograd_kernels.so (e.g. build/main)")
    p.add_argument("--before-ref", help="git commit whose C sources to compile and measure as 'before'")
    p.add_argument("--log2n", type=int, default=26, help="elements timed: 2^LOG2N (default 64M)")
    p.add_argument("--count-log2n", type=int, default=16, help="elements counted under callgrind")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("results/kernels_c"))
    p.add_argument("--replot", action="store_true", help="table and plot again from OUT/kernels_c.json")
    args = p.parse_args()
    if args.replot:
        result = json.loads((args.out / "kernels_c.json").read_text())
        plot(result, args.out / "kernels_c.png")
        print(report(result))
        return
    if not (args.library or args.before_ref):
        p.error("name --library, --before-ref or both")
    if not shutil.which("valgrind"):
        sys.exit("valgrind is needed for the instruction counts (Debian package valgrind)")
    libraries = {}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        exes = {}
        if args.before_ref:
            (work / "before").mkdir()
            exes["before"] = build_driver(library_from_ref(args.before_ref, work / "before"), work / "before")
            libraries["before"] = f"commit {args.before_ref} (its C sources, -O3)"
        if args.library:
            lab = "after" if args.before_ref else "now"
            (work / lab).mkdir()
            exes[lab] = build_driver(args.library.resolve(), work / lab)
            head = sh(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).strip()
            libraries[lab] = f"{args.library} (built from {head})"
        rows = measure(exes, args)
    meta = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "compiler": sh(["cc", "--version"]).splitlines()[0], "date": time.strftime("%Y-%m-%d"),
            "log2n": args.log2n, "count_log2n": args.count_log2n, "threads": args.threads,
            "labels": list(exes), "libraries": libraries}
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    if cpu:
        meta["machine"] = f"{cpu.group(1)}, {os.cpu_count()} cores"
    result = {"meta": meta, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels_c.json").write_text(json.dumps(result, indent=1))
    text = report(result)
    (args.out / "kernels_c.txt").write_text(text + "\n")
    plot(result, args.out / "kernels_c.png")
    print(text)


if __name__ == "__main__":
    main()
