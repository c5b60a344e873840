#!/usr/bin/env python3
"""The rotation table (EvoGrad paper, Table 3) on Fashion-MNIST: every
method x true angle x seed, then the learned angles and rotated-test
accuracies (mean ± sd over seeds), the time per iteration, and a plot of
lambda's trajectories.

    .venv/bin/python examples/rotation/table.py

Writes results/rotation/rotation.json (settings, summary and every run with
its trajectory), results/rotation/table.md and results/rotation/angles.png.
Each run is cached as JSON under --cache (git-ignored results/local/ by
default), so an interrupted table resumes where it stopped.
"""
import argparse
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import evograd  # noqa: E402
import train  # noqa: E402
from common.grid import mean_sd  # noqa: E402
from methods import LEARNED, METHODS  # noqa: E402

LABELS = {"baseline": "baseline", "oracle": "oracle", "evograd": "EvoGrad",
          "lookahead": "EvoGrad lookahead", "jvp": "EvoGrad jvp", "t1t2": "T1-T2"}
COLOURS = {"evograd": "#d95f02", "lookahead": "#7570b3", "jvp": "#e7298a", "t1t2": "#1b9e77",
           "baseline": "#7f7f7f",
           "oracle": "black"}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--angles", type=float, nargs="+", default=[30.0, 0.0, -45.0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", type=Path, default=Path("results/rotation"))
    p.add_argument("--cache", type=Path, default=Path("results/local/rotation/runs"))
    p.add_argument("--replot", action="store_true", help="no runs: rewrite the table, JSON and plot from --out's JSON")
    p.add_argument("train_args", nargs="*", help="after --: passed to every train.py run (e.g. -- --iterations 400)")
    return p.parse_args(argv)


def run_all(args):
    grid = [(m, a, s) for a in args.angles for m in args.methods for s in args.seeds]
    args.cache.mkdir(parents=True, exist_ok=True)
    runs, load = [], [os.getloadavg()[0]]
    bar = tqdm(grid, desc="rotation runs", dynamic_ncols=True)
    for method, angle, seed in bar:
        argv = ["--method", method, "--angle", f"{angle:g}", "--seed", str(seed), "--quiet"] + args.train_args
        path = args.cache / (f"{method}_angle{angle:+g}_seed{seed}_" +
                             "_".join(a.lstrip("-") for a in args.train_args) + ".json").replace("_.json", ".json")
        if path.exists():
            r = json.loads(path.read_text())
        else:
            t0 = time.time()
            r = train.run(train.parse_args(argv))
            r["wall_s"] = time.time() - t0
            path.write_text(json.dumps(r))
            load.append(os.getloadavg()[0])
        runs.append(r)
        bar.set_postfix_str(f"{method} {angle:+g}° s{seed}: λ={r['final_angle']:+.1f}°, acc {100 * r['test_accuracy']:.1f}%")
    return runs, load


def summarise(runs, methods, angles):
    summary = {}
    for angle in angles:
        row = {}
        for m in methods:
            rs = [r for r in runs if r["method"] == m and r["true_angle"] == angle]
            if not rs:
                continue
            acc = [100 * r["test_accuracy"] for r in rs]
            ang = [r["final_angle"] for r in rs]
            row[m] = {"seeds": [r["seed"] for r in rs], "test_accuracy": acc, "learned_angle": ang,
                      "accuracy_mean": statistics.mean(acc), "accuracy_sd": statistics.stdev(acc) if len(acc) > 1 else 0.0,
                      "angle_mean": statistics.mean(ang), "angle_sd": statistics.stdev(ang) if len(ang) > 1 else 0.0,
                      "abs_error_mean": statistics.mean(abs(a - angle) for a in ang),
                      "ms_per_iteration": [1000 * r["median_iteration_s"] for r in rs]}
        summary[f"{angle:g}"] = row
    return summary


def table_lines(summary, settings, methods):
    s = settings
    n_seeds = len(next(iter(next(iter(summary.values())).values()))["seeds"])
    lines = [f"Rotation (EvoGrad paper 4.2) on Fashion-MNIST: LeNet-5 ({s['model']}) trained on "
             f"{s['train_size']} upright images for {s['iterations']} iterations of batch {s['batch_size']}; "
             f"validation ({s['val_size']} held-out training images) and test ({s['test_size']} images) rotated by "
             f"the true angle. lambda (degrees) starts at 0, one Adam meta-step per iteration "
             f"(lr {s['meta_lr']:g}, {s['meta_schedule']}). EvoGrad K={s['population']}, sigma={s['sigma']:g}, "
             f"tau={s['temperature']:g}, {s['noise']} noise. Mean ± sd over {n_seeds} seeds.", "",
             "| true angle | baseline acc. (%) | oracle acc. (%) | "
             + " | ".join(f"{LABELS[m]} angle (°) | {LABELS[m]} acc. (%)" for m in LEARNED) + " |",
             "|---:|---:|---:|" + "---:|---:|" * len(LEARNED)]
    for angle, row in summary.items():
        def cell(m, key):
            if m not in row:
                return "–"
            return mean_sd(row[m][key])
        lines.append(f"| {float(angle):+g}° | {cell('baseline', 'test_accuracy')} | {cell('oracle', 'test_accuracy')} | "
                     + " | ".join(f"{cell(m, 'learned_angle')} | {cell(m, 'test_accuracy')}"
                                  for m in LEARNED) + " |")
    lines += ["", "Time per iteration (model update + meta-update; median per run, mean ± sd over runs, "
              f"one CPU thread, {settings['load_note']}):", "",
              "| method | ms / iteration |", "|---|---:|"]
    for m in methods:
        ms = [t for row in summary.values() if m in row for t in row[m]["ms_per_iteration"]]
        lines.append(f"| {LABELS[m]} | {mean_sd(ms)} |")
    return lines


def plot(runs, summary, angles, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(angles), figsize=(5.2 * len(angles), 4.6), squeeze=False)
    for ax, angle in zip(axes[0], angles):
        row = summary[f"{angle:g}"]
        for m in ("t1t2", "evograd", "lookahead", "jvp"):
            rs = [r for r in runs if r["method"] == m and r["true_angle"] == angle]
            for r in rs:
                ax.plot(r["angle_trajectory"], color=COLOURS[m], lw=0.9, alpha=0.55)
            if rs:
                st = row[m]
                ax.plot([], [], color=COLOURS[m], lw=2,
                        label=f"{LABELS[m]}: {st['angle_mean']:+.1f} ± {st['angle_sd']:.1f}°, "
                              f"acc {st['accuracy_mean']:.1f}%")
        n = max(len(r["angle_trajectory"]) for r in runs if r["true_angle"] == angle)
        ax.axhline(angle, color="black", ls="--", lw=1.4,
                   label=f"true angle = oracle" + (f" (acc {row['oracle']['accuracy_mean']:.1f}%)" if "oracle" in row else ""))
        if "baseline" in row:
            ax.axhline(0.0, color=COLOURS["baseline"], ls=":", lw=1.4,
                       label=f"baseline λ=0 (acc {row['baseline']['accuracy_mean']:.1f}%)")
        ax.set_xlim(0, n - 1)
        seen = [v for r in runs if r["true_angle"] == angle for v in r["angle_trajectory"]]
        lo, hi = min(seen + [0.0, angle]), max(seen + [0.0, angle])
        pad = 0.12 * max(hi - lo, 20)
        ax.set_ylim(lo - pad - (0.35 * max(hi - lo, 20) if angle > 0 else 0),  # room for the legend
                    hi + pad + (0.35 * max(hi - lo, 20) if angle <= 0 else 0))
        ax.set_title(f"true angle {angle:+g}°")
        ax.set_xlabel("iteration (one model update + one meta-update)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right" if angle > 0 else "upper right")
    axes[0][0].set_ylabel("learned rotation λ (degrees)")
    fig.suptitle("Learning the training-image rotation from a rotated validation set "
                 "(Fashion-MNIST, LeNet-5; one line per seed)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def dumps(doc) -> str:
    """Indented JSON with each list of numbers on one line."""
    text = json.dumps(doc, indent=1)
    return re.sub(r"\[\s*([-+0-9.eE,\s]+?)\s*\]", lambda m: "[" + ", ".join(m.group(1).split()).replace(",,", ",") + "]", text)


def slim(run):
    """A run as rotation.json keeps it: lambda's trajectory to 0.01 degree,
    the per-step weight entropies only as their mean."""
    out = {k: v for k, v in run.items() if k != "entropy_trajectory"}
    out["angle_trajectory"] = [round(v, 2) for v in run["angle_trajectory"]]
    return out


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        doc = json.loads((args.out / "rotation.json").read_text())
        runs, settings = doc["runs"], doc["settings"]
        methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
        angles = doc["angles"]
    else:
        t0 = time.time()
        runs, load = run_all(args)
        methods, angles = args.methods, args.angles
        settings = dict(runs[0]["settings"])
        settings.update(angles=angles, seeds=args.seeds, methods=methods, table_wall_s=time.time() - t0,
                        load_average_samples=load, evograd_version=evograd.__version__,
                        evograd_package=os.path.dirname(evograd.__file__), torch=torch.__version__,
                        cpu_count=os.cpu_count())
        settings["load_note"] = (f"2-core machine shared with other jobs, 1-min load average "
                                 f"{min(load):.1f}-{max(load):.1f} during the runs")
    summary = summarise(runs, methods, angles)
    lines = table_lines(summary, settings, methods)
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    (args.out / "rotation.json").write_text(dumps(
        {"settings": settings, "angles": angles, "summary": summary, "runs": [slim(r) for r in runs]}))
    plot(runs, summary, angles, args.out / "angles.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
