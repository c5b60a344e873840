"""Shared plumbing of the A/B benchmarks: one (method, setting) per fresh
process, and tables of peak memory and time with ratios to a base method."""
import json
import os
import platform
import subprocess
import sys


def run_worker(script, cfg):
    """Runs `script --worker JSON` in a fresh interpreter; returns its last stdout line as JSON."""
    out = subprocess.run([sys.executable, script, "--worker", json.dumps(cfg)], env=dict(os.environ),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"worker failed for {cfg}:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def other_mode(args, worker, plot, saved_json):
    """The benchmarks' two other modes, before any measuring: `--worker JSON`
    (one measurement in this process, printed as JSON, see run_worker) and
    `--replot` (plot(saved results) from `saved_json`). True when one ran."""
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return True
    if args.replot:
        plot(json.loads(saved_json.read_text()))
        return True
    return False


def device_label(device):
    import torch
    if str(device).startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def table(rows, key, title, methods, base):
    """Two blocks, memory then time; each cell 'value (ratio to base)'."""
    methods = [m for m in methods if any(r["method"] == m for r in rows)]
    keys = sorted({r[key] for r in rows})
    by = {(r[key], r["method"]): r for r in rows}
    lines = [title]
    for field, unit, fmt in (("peak_mib", "peak memory, MiB", "{:.0f}"),
                             ("median_s", "median time per iteration, s", "{:.3f}")):
        head = f"{key:>12} | " + " | ".join(f"{m:>20}" for m in methods)
        lines += ["", f"{unit} (ratio to {base}):", head, "-" * len(head)]
        for k in keys:
            ref = by.get((k, base))
            cells = []
            for m in methods:
                r = by.get((k, m))
                if r is None:
                    cells.append(f"{'-':>20}")
                    continue
                cell = fmt.format(r[field])
                if ref and m != base and ref[field] > 0:
                    cell += f" ({r[field] / ref[field]:.2f}x)"
                cells.append(f"{cell:>20}")
            lines.append(f"{k:>12} | " + " | ".join(cells))
    return "\n".join(lines)


def plot_vs_size(axes, rows, methods, y_keys, colors, labels, xlabel="model parameters (millions)"):
    """One line per method on each axis: y_keys[i] against the model's
    parameter count (millions), for the rows of that method; grid, x label,
    legend on the first axis."""
    for m in methods:
        pts = sorted((r["params"] / 1e6, *(r[k] for k in y_keys)) for r in rows if r["method"] == m)
        if not pts:
            continue
        for i, ax in enumerate(axes):
            ax.plot([p[0] for p in pts], [p[i + 1] for p in pts], "o-", color=colors[m], label=labels[m])
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].legend()
