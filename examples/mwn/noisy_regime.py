#!/usr/bin/env python3
"""Meta-Weight-Net where label noise hurts: Fashion-MNIST, a classifier that
memorises wrong labels (MLP 784-512-512-10), a training subset and enough
epochs that the baseline's test accuracy peaks and then falls.

Steps, in this order:

  pilot   the baseline alone at 0/20/40% uniform noise for each candidate
          training-subset size; the setting is chosen from these runs alone
          by the rule in RULE (written into pilot.json), before any MWN run.
  table   baseline / MWN T1-T2 / MWN EvoGrad x seeds in the chosen setting:
          table.md, curves.png, weighting.png, one JSON per run in runs/;
          rows other than the three (--population, --vnet-input) also go to
          investigation_curves.png and investigation_weighting.png.
  report  table.md and the plots again from the JSON on disk.
  timing  seconds per iteration of each method, interleaved rounds.

Runs already on disk are read back, not repeated (delete a JSON to redo it).

    .venv/bin/python examples/mwn/noisy_regime.py pilot --threads 1
    .venv/bin/python examples/mwn/noisy_regime.py table --threads 1
    .venv/bin/python examples/mwn/noisy_regime.py table --threads 1 --noise-rates 0.4 0.2
    .venv/bin/python examples/mwn/noisy_regime.py timing --threads 1

--quick: a few iterations on a few hundred images (for the tests); writes
under --out like the real thing, so give it another --out.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tqdm import tqdm  # noqa: E402

import train  # noqa: E402
from common.grid import mean_sd  # noqa: E402

# "jvp-onestep": jvp with train.py --one-step (one training pass per iteration)
METHODS = ("baseline", "t1t2", "evograd", "lookahead", "jvp", "jvp-onestep")
LABELS = {"baseline": "baseline", "t1t2": "MWN, T1-T2", "evograd": "MWN, EvoGrad",
          "lookahead": "MWN, EvoGrad lookahead", "jvp": "MWN, EvoGrad jvp",
          "jvp-onestep": "MWN, EvoGrad jvp, one training pass"}
COLOURS = {"baseline": "tab:gray", "t1t2": "tab:blue", "evograd": "tab:red",
           "lookahead": "tab:green", "jvp": "tab:cyan", "jvp-onestep": "tab:pink"}
# investigation rows, by how they differ from the three
VARIANT_COLOURS = (("through", "tab:purple"), ("K", "tab:olive"), ("fixed", "tab:orange"))


def variant_name(method, population=2, vnet_input="own"):
    """A table row: the method, with EvoGrad's population when not the default
    K=2 and the weighting net's input when not the official one, e.g.
    'evograd-K8-fixed' (investigation runs)."""
    name = method
    if method == "evograd" and population not in (None, 2):
        name += f"-K{population}"
    if vnet_input not in (None, "own"):
        name += f"-{vnet_input}"
    return name


def variant(r):
    method = r["method"] + ("-onestep" if r.get("one_step") else "")
    return variant_name(method, r.get("population"), r.get("vnet_input"))


def label(v):
    if v in LABELS:
        return LABELS[v]
    method, *rest = v.split("-")
    words = {"fixed": "V fed the current losses", "through": "V's input not detached"}
    return ", ".join([LABELS[method]] + [f"K={x[1:]}" if x.startswith("K") else words[x] for x in rest])


def colour(v, order=None):
    if v in COLOURS:
        return COLOURS[v]
    return next((c for key, c in VARIANT_COLOURS if f"-{key}" in v), "tab:brown")

# The selection rule, fixed before the pilot ran and applied to the pilot's
# baseline runs only (no MWN run is looked at):
ZERO_NOISE_MAX_DROP = 1.0  # points: at 0% noise the baseline must not itself decline
NOISY_MIN_DROP = 3.0       # points: the least peak-to-final drop that counts as "clearly degrades"
RULE = (f"Among the candidate training-subset sizes, keep those where the baseline at 0% noise "
        f"loses less than {ZERO_NOISE_MAX_DROP:g} point of test accuracy from its peak to the end "
        f"of training (so a decline at 40% comes from the wrong labels, not from training "
        f"itself), and where the estimated table time fits the budget; of these choose the one "
        f"where the baseline at 40% noise loses the most from its peak to its end. The drop "
        f"must be at least {NOISY_MIN_DROP:g} points for the setting to count as one where "
        f"noise clearly hurts.")
# Cost of one table relative to the baseline's, per seed: T1-T2 and EvoGrad
# iterations measured at ~3.3x and ~2.5x the baseline's on this CPU (MLP).
COST_FACTOR = 1 + 3.5 + 3.0


def common_argv(args, train_size, epochs, rate, seed, method):
    iterations = epochs * train_size // args.batch_size
    one_step = ["--one-step"] if method == "jvp-onestep" else []
    return one_step + ["--method", method.replace("-onestep", ""), "--model", args.model, "--noise-rate", str(rate), "--seed", str(seed),
            "--train-size", str(train_size), "--iterations", str(iterations),
            "--batch-size", str(args.batch_size), "--meta-batch-size", str(args.batch_size),
            "--eval-every", str(max(1, train_size // args.batch_size)),  # once an epoch
            "--test-size", str(args.test_size), "--threads", str(args.threads), "--quiet"]


def run_all(grid, out: Path, desc):
    """grid: list of (stem, argv). Each run is train.main in this process (one
    at a time); a run whose JSON exists is read back."""
    out.mkdir(parents=True, exist_ok=True)
    results = []
    bar = tqdm(grid, desc=desc, dynamic_ncols=True)
    for stem, argv in bar:
        bar.set_postfix_str(stem)
        path = out / f"{stem}.json"
        if path.exists():
            results.append(json.loads(path.read_text()))
        else:
            results.append(train.main(list(argv) + ["--json", str(path)]))
    return results


def drop(r):
    return 100 * (r["best_test_accuracy"] - r["test_accuracy"])


# ---------------------------------------------------------------- pilot

def pilot(args):
    grid = [(f"baseline_n{size}_noise{round(100 * rate)}_seed{seed}",
             common_argv(args, size, args.epochs, rate, seed, "baseline"))
            for size in args.train_sizes for rate in args.noise_rates for seed in args.pilot_seeds]
    runs = run_all(grid, args.out / "pilot_runs", "pilot (baseline only)")
    settings = []
    for size in args.train_sizes:
        s = {"train_size": size, "epochs": args.epochs}
        for rate in args.noise_rates:
            rs = [r for r in runs if r["train_size"] == size and r["noise_rate"] == rate]
            key = f"noise{round(100 * rate)}"
            s[key] = {"best": statistics.mean(100 * r["best_test_accuracy"] for r in rs),
                      "final": statistics.mean(100 * r["test_accuracy"] for r in rs),
                      "drop": statistics.mean(drop(r) for r in rs),
                      "best_epoch": statistics.mean(r["best_iteration"] * args.batch_size / size for r in rs),
                      "fit_corrupted_end": statistics.mean(r["curve"][-1]["fit_corrupted"] or 0 for r in rs),
                      "s_per_iteration": statistics.median(r["median_iteration_s"] for r in rs),
                      "wall_s": statistics.mean(r["wall_s"] for r in rs)}
        noisiest = f"noise{round(100 * max(args.noise_rates))}"
        s["estimated_table_s"] = s[noisiest]["wall_s"] * COST_FACTOR * len(args.seeds)
        settings.append(s)
    zero = f"noise{round(100 * min(args.noise_rates))}"
    noisiest = f"noise{round(100 * max(args.noise_rates))}"
    eligible = [s for s in settings if s[zero]["drop"] < ZERO_NOISE_MAX_DROP
                and s["estimated_table_s"] <= args.budget_s]
    chosen = max(eligible, key=lambda s: s[noisiest]["drop"]) if eligible else None
    summary = {"rule": RULE, "zero_noise_max_drop": ZERO_NOISE_MAX_DROP,
               "noisy_min_drop": NOISY_MIN_DROP, "budget_s": args.budget_s,
               "cost_factor": COST_FACTOR, "model": args.model, "batch_size": args.batch_size,
               "seeds": args.pilot_seeds, "date": time.strftime("%Y-%m-%d"), "settings": settings,
               "chosen": None if chosen is None else {"train_size": chosen["train_size"], "epochs": args.epochs},
               "clearly_degrades": bool(chosen and chosen[noisiest]["drop"] >= NOISY_MIN_DROP),
               "runs": [{k: r[k] for k in ("method", "noise_rate", "train_size", "iterations", "seed",
                                           "test_accuracy", "best_test_accuracy", "best_iteration",
                                           "median_iteration_s", "wall_s")}
                        | {"curve": [[e["iteration"], e["test_accuracy"], e["fit_corrupted"], e["fit_clean"]]
                                     for e in r["curve"]]} for r in runs],
               "curve_columns": ["iteration", "test_accuracy", "fit_corrupted", "fit_clean"]}
    (args.out / "pilot.json").write_text(json.dumps(summary, indent=1))
    lines = [f"Pilot: baseline only, {args.model}, {args.epochs} epochs, batch {args.batch_size}, "
             f"seeds {args.pilot_seeds}, test accuracy (%) on {args.test_size} test images, "
             f"{summary['date']}", "",
             "| train images | noise | best (epoch) | final | drop | corrupted labels fit at end | s/it |",
             "|---|---|---|---|---|---|---|"]
    for s in settings:
        for rate in args.noise_rates:
            c = s[f"noise{round(100 * rate)}"]
            lines.append(f"| {s['train_size']} | {100 * rate:.0f}% | {c['best']:.2f} ({c['best_epoch']:.0f}) "
                         f"| {c['final']:.2f} | {c['drop']:.2f} | {100 * c['fit_corrupted_end']:.0f}% "
                         f"| {c['s_per_iteration']:.4f} |")
    lines += ["", "Rule: " + RULE, "",
              ("Chosen: " + (f"{chosen['train_size']} training images, {args.epochs} epochs "
                             f"(40%-noise drop {chosen[noisiest]['drop']:.2f} points"
                             + ("" if summary["clearly_degrades"] else ", below the 'clearly' bar") + ")")
               if chosen else "Chosen: none qualifies")]
    (args.out / "pilot.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_pilot(runs, args, args.out / "pilot.png")
    return summary


def plot_pilot(runs, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = args.train_sizes
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.2 * len(sizes), 3.4), squeeze=False, sharey=True)
    for ax, size in zip(axes[0], sizes):
        for rate in args.noise_rates:
            for r in [r for r in runs if r["train_size"] == size and r["noise_rate"] == rate]:
                ep = [e["iteration"] * args.batch_size / size for e in r["curve"]]
                ax.plot(ep, [100 * e["test_accuracy"] for e in r["curve"]], lw=1.2,
                        label=f"{100 * rate:.0f}% noise" if r["seed"] == args.pilot_seeds[0] else None,
                        color={0: "tab:green", 20: "tab:orange", 40: "tab:red"}.get(round(100 * rate)))
        ax.set_title(f"baseline, {size} training images")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- table

def chosen_setting(args):
    if args.train_size:
        return args.train_size, args.epochs
    path = args.out / "pilot.json"
    if not path.exists():
        raise SystemExit(f"{path} not found: run the pilot first, or give --train-size")
    chosen = json.loads(path.read_text())["chosen"]
    if chosen is None:
        raise SystemExit(f"{path}: no setting qualified; give --train-size")
    return chosen["train_size"], chosen["epochs"]


def table(args):
    size, epochs = chosen_setting(args)
    grid = [(f"{variant_name(method, args.population, args.vnet_input if method != 'baseline' else 'own')}"
             f"_noise{round(100 * rate)}_seed{seed}",
             common_argv(args, size, epochs, rate, seed, method) + extra_argv(args, method))
            for rate in args.noise_rates for seed in args.seeds for method in args.methods]
    run_all(grid, args.out / "runs", "table runs")
    report(args)  # every run on disk: earlier tables' rows stay


# --vnet-config: the weighting net's optimiser and size, and how the
# meta-step weighs the costs. 'official' is MW-Net's current code (Adam 1e-3,
# weight decay 1e-4, 100 hidden units, mean); 'paper' the EvoGrad paper's MWN
# code (SGD 1e-3, momentum 0.9, Nesterov, weight decay 5e-4, 200 hidden
# units, weights normalised by their sum).
VNET_CONFIGS = {"official": [], "paper": ["--vnet-optimizer", "sgd", "--vnet-weight-decay", "5e-4",
                                          "--vnet-hidden", "200", "--meta-weights", "sum"]}


def extra_argv(args, method):
    out = ["--scale", args.scale, "--population", str(args.population)] if method == "evograd" else []
    return out + (["--vnet-input", args.vnet_input] + VNET_CONFIGS[args.vnet_config]
                  if method != "baseline" else [])


def load_runs(args):
    return [json.loads(p.read_text()) for p in sorted((args.out / "runs").glob("*.json"))]


def late(curve, key, fraction=0.1):
    """Mean of a curve's statistic over its last `fraction` of evaluations."""
    vals = [e[key] for e in curve[-max(1, round(fraction * len(curve))):] if e[key] is not None]
    return statistics.mean(vals) if vals else None


def fmt(values, scale=1.0, digits=2):
    values = [scale * v for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def weighting_net_line(runs):
    """The weighting net's optimiser, size and EvoGrad's scale, as the runs record them."""
    mwn = [r for r in runs if r["method"] != "baseline"]
    if not mwn:
        return []
    configs = sorted({(r.get("vnet_optimizer", "adam"), r.get("vnet_lr", 1e-3), r["vnet_weight_decay"],
                       r.get("vnet_hidden", 100), r.get("meta_weights", "mean"))
                      for r in mwn})  # runs from before these fields: the defaults
    scales = sorted({str(r["scale"]) for r in mwn if r["method"] == "evograd"})
    said = "; ".join(f"{'Adam' if o == 'adam' else 'SGD momentum 0.9 Nesterov'} lr {lr:g}, weight decay {wd:g}, "
                     f"{h} hidden units, meta-step loss sum(cost * V) "
                     f"{'/ n' if mw == 'mean' else 'with V normalised by its sum'}"
                     for o, lr, wd, h, mw in configs)
    return [f"Weighting net: {said}" + (f"; EvoGrad's scale: {', '.join(scales)}" if scales else "") + ".", ""]


def report(args, runs=None):
    runs = load_runs(args) if runs is None else runs
    if not runs:
        raise SystemExit(f"no runs under {args.out / 'runs'}")
    rates = sorted({r["noise_rate"] for r in runs}, reverse=True)
    methods = [m for m in METHODS if any(variant(r) == m for r in runs)]
    methods += sorted({variant(r) for r in runs} - set(methods),
                      key=lambda m: (METHODS.index(m.split("-")[0]), "-K" in m, m))
    r0 = runs[0]
    epochs = r0["iterations"] * r0["batch_size"] // r0["train_size"]
    seeds = sorted({r["seed"] for r in runs})
    lines = [f"Fashion-MNIST, {r0['model']} ({r0['model_parameters']:,} parameters), {r0['train_size']} "
             f"training images with uniform label noise, clean meta set of 1000, {epochs} epochs "
             f"({r0['iterations']} iterations of batch {r0['batch_size']}), SGD lr {r0['lr']} "
             f"(x0.1 at 80% and 90%), weight decay {r0['weight_decay']}; test accuracy (%) on "
             f"{r0['test_size']} test images, mean ± sample std over seeds {seeds}; "
             f"torch {r0['torch']}, {r0['device']}, 1 thread, {time.strftime('%Y-%m-%d')}.", "",
             *weighting_net_line(runs),
             "'best' is the highest test accuracy over the once-an-epoch evaluations (picked on the "
             "test set, so optimistic); 'final' is after the last iteration. V: the weighting net's "
             "output, mean over the corrupted / clean examples of each batch, last 10% of training; "
             "'corrupted share' is the fraction of the classifier update's (normalised) weight on "
             "corrupted examples (the noise rate for the baseline); 'memorised' is the fraction of "
             "corrupted examples the classifier predicts with their wrong label, last 10%.", ""]
    for rate in rates:
        lines += [f"### {100 * rate:.0f}% noise", "",
                  "| method | final | best | s/iteration | V corrupted | V clean | corrupted share "
                  "| memorised | runs |", "|---|---|---|---|---|---|---|---|---|"]
        for m in methods:
            rs = [r for r in runs if variant(r) == m and r["noise_rate"] == rate]
            if not rs:
                continue
            lines.append(
                f"| {label(m)} | {fmt([r['test_accuracy'] for r in rs], 100)} "
                f"| {fmt([r['best_test_accuracy'] for r in rs], 100)} "
                f"| {fmt([r['median_iteration_s'] for r in rs], 1, 4)} "
                f"| {fmt([late(r['curve'], 'v_corrupted') for r in rs], 1, 3)} "
                f"| {fmt([late(r['curve'], 'v_clean') for r in rs], 1, 3)} "
                f"| {fmt([late(r['curve'], 'share_corrupted') for r in rs], 1, 3)} "
                f"| {fmt([late(r['curve'], 'fit_corrupted') for r in rs], 100, 1)}% | {len(rs)} |")
        lines.append("")
    lines += ["Paper (Bohdal et al. 2021, Table 5; CIFAR-10, ResNet-32, 100 epochs, 40% uniform noise): "
              "baseline 70.77, MWN T1-T2 87.54, MWN EvoGrad 87.74.",
              "s/iteration: median over a run's iterations (meta-step and classifier update, no "
              "evaluation), mean ± std over seeds; one torch thread on a 2-core CPU shared with "
              "other jobs, and the rows ran at different times under different load: timing.md "
              "compares the methods in interleaved rounds.",
              "Findings, the choice of setting and the investigation of EvoGrad: notes.md."]
    extra = [label(m) for m in methods if m not in METHODS]
    if extra:
        lines.append("Investigation rows, run after the three methods' table in the same setting: "
                     + "; ".join(extra) + " (notes.md says why).")
    (args.out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    main = [m for m in methods if m in METHODS]
    plot_curves(runs, rates, main, args.out / "curves.png")
    plot_weighting(runs, rates, main, args.out / "weighting.png")
    if len(main) < len(methods):  # investigation rows: their own plots, at the rates they ran at
        extra_rates = [r for r in rates if any(variant(x) not in METHODS and x["noise_rate"] == r for x in runs)]
        plot_curves(runs, extra_rates, methods, args.out / "investigation_curves.png")
        order = sorted(methods, key=lambda m: (METHODS.index(m.split("-")[0]), "-K" in m, m))
        plot_weighting(runs, extra_rates, order, args.out / "investigation_weighting.png")


def _band(ax, runs, key, colour, label, scale=1.0, ls="-", seeds=True):
    """Mean ± std over runs of curve[key] against epoch, and each run thinly
    (three seeds that disagree are better seen than averaged)."""
    import numpy as np
    rs = [r for r in runs if r["curve"][0][key] is not None]
    if not rs:
        return
    n = min(len(r["curve"]) for r in rs)
    r0 = rs[0]
    ep = np.array([e["iteration"] for e in r0["curve"][:n]]) * r0["batch_size"] / r0["train_size"]
    ys = np.array([[scale * e[key] for e in r["curve"][:n]] for r in rs])
    mean, sd = ys.mean(0), (ys.std(0, ddof=1) if len(rs) > 1 else np.zeros(n))
    ax.plot(ep, mean, color=colour, ls=ls, lw=1.8, label=label)
    ax.fill_between(ep, mean - sd, mean + sd, color=colour, alpha=0.15, lw=0)
    if seeds and len(rs) > 1:
        for y in ys:
            ax.plot(ep, y, color=colour, ls=ls, lw=0.6, alpha=0.6)


def plot_curves(runs, rates, methods, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(rates), figsize=(max(9.0, 5.5 * len(rates)), 7.5), squeeze=False,
                             sharex=True)
    for j, rate in enumerate(rates):
        for m in methods:
            rs = [r for r in runs if variant(r) == m and r["noise_rate"] == rate]
            if rs:
                _band(axes[0][j], rs, "test_accuracy", colour(m, methods), f"{label(m)} ({len(rs)} seeds)", 100)
                _band(axes[1][j], rs, "fit_corrupted", colour(m, methods), label(m), 100)
        axes[0][j].set_title(f"{100 * rate:.0f}% uniform label noise")
        axes[0][j].set_ylabel("test accuracy (%)")
        axes[1][j].set_ylabel("corrupted training labels\npredicted as given (%)")
        axes[1][j].set_xlabel("epoch")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    fig.suptitle("Test accuracy and memorisation of wrong labels\n(mean ± std over seeds; thin lines: each seed)",
                 fontsize=11)
    handles, labels = axes[0][0].get_legend_handles_labels()
    ncol = 3 if len(rates) > 1 else 2
    fig.legend(handles, labels, loc="lower center", ncol=min(ncol, len(labels)), fontsize=8.5)
    fig.tight_layout(rect=(0, 0.03 * (1 + (len(labels) - 1) // ncol) + 0.01, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_weighting(runs, rates, methods, path):
    """Per noise rate: V(loss) at the end of training, each seed (first panel);
    then one panel per meta-learning method: mean V on clean (solid) and
    corrupted (dashed) examples over training, each seed. Three panels a row."""
    import math as _math
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    meta = [m for m in methods if m != "baseline"]
    if not meta:
        return
    ncols = min(3, 1 + len(meta))
    per_rate = _math.ceil((1 + len(meta)) / ncols)
    fig, axes = plt.subplots(per_rate * len(rates), ncols, figsize=(5.2 * ncols, 3.9 * per_rate * len(rates)),
                             squeeze=False)
    for i, rate in enumerate(rates):
        panels = [axes[i * per_rate + k // ncols][k % ncols] for k in range(per_rate * ncols)]
        ax = panels[0]
        grid = np.array(runs[0]["loss_grid"])
        for m in meta:
            rs = [r for r in runs if variant(r) == m and r["noise_rate"] == rate and r["weighting_function"]]
            for k, r in enumerate(rs):
                ax.plot(grid, r["weighting_function"], color=colour(m), lw=1.4, ls=["-", "--", ":", "-."][k % 4],
                        label=f"{label(m)}, seed {r['seed']}")
        ax.set_xlabel("per-example training loss")
        ax.set_ylabel("weight V(loss), end of training")
        ax.set_title(f"learned weighting function, {100 * rate:.0f}% noise", fontsize=10)
        ax.set_ylim(0, 1.02)
        ax.set_xlim(grid[0], grid[-1])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6 if len(meta) > 2 else 7)
        for ax, m in zip(panels[1:], meta):
            rs = [r for r in runs if variant(r) == m and r["noise_rate"] == rate]
            _band(ax, rs, "v_clean", "tab:green", "clean examples (mean ± std over seeds)", 1, "-")
            _band(ax, rs, "v_corrupted", "tab:red", "corrupted examples", 1, "--")
            ax.set_xlabel("epoch")
            ax.set_ylabel("mean weight V(loss) in the batch")
            ax.set_title(f"{label(m)}\nweight by label, {100 * rate:.0f}% noise", fontsize=9.5)
            ax.set_ylim(0, 1.02)
            ax.grid(alpha=0.3)
            if rs:
                ax.legend(fontsize=7, loc="lower left")
            else:
                ax.text(0.5, 0.5, "not run at this noise rate", ha="center", transform=ax.transAxes)
        for ax in panels[1 + len(meta):]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- timing

def timing(args):
    """Seconds per iteration of each method in the chosen setting, measured in
    interleaved rounds (each round runs every method once, in turn), so that
    other jobs on the machine weigh on all methods alike: timing.{json,md}."""
    size, _ = chosen_setting(args)
    rate = max(args.noise_rates)
    name = {m: variant_name(m, args.population, args.vnet_input if m != "baseline" else "own")
            for m in args.methods}
    per_run = {name[m]: [] for m in args.methods}
    bar = tqdm(total=args.timing_rounds * len(args.methods), desc="timing", dynamic_ncols=True)
    for rnd in range(args.timing_rounds):
        for m in args.methods:
            argv = (common_argv(args, size, 1, rate, rnd, m) + extra_argv(args, m)
                    + ["--iterations", str(args.timing_iterations), "--eval-every", "0", "--test-size", "100"])
            per_run[name[m]].append(train.main(argv)["median_iteration_s"])
            bar.update()
    bar.close()
    summary = {m: {"median_s": statistics.median(v), "min_s": min(v), "per_round": v} for m, v in per_run.items()}
    base = summary.get("baseline", {}).get("median_s")
    out = {"train_size": size, "noise_rate": rate, "iterations_per_run": args.timing_iterations,
           "rounds": args.timing_rounds, "threads": args.threads, "model": args.model,
           "population": args.population, "date": time.strftime("%Y-%m-%d"), "methods": summary}
    (args.out / "timing.json").write_text(json.dumps(out, indent=1))
    lines = [f"Seconds per iteration (meta-step + classifier update, batch {args.batch_size}, {args.model}, "
             f"{args.threads} thread): median over {args.timing_rounds} interleaved rounds of each run's "
             f"median over {args.timing_iterations} iterations; {out['date']}.", "",
             "| method | s/iteration (median) | fastest round | vs baseline |", "|---|---|---|---|"]
    for m, v in summary.items():
        lines.append(f"| {label(m)} | {v['median_s']:.4f} | {v['min_s']:.4f} | "
                     + (f"{v['median_s'] / base:.1f}x |" if base else "– |"))
    (args.out / "timing.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=["pilot", "table", "report", "timing"])
    p.add_argument("--out", type=Path, default=Path("results/mwn_noisy"))
    p.add_argument("--model", default="mlp", help="train.py --model")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=100, help="training and meta batch size")
    p.add_argument("--test-size", type=int, default=10000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-sizes", type=int, nargs="+", default=[5000, 10000, 20000], help="pilot candidates")
    p.add_argument("--pilot-seeds", type=int, nargs="+", default=[0])
    p.add_argument("--budget-s", type=float, default=3600, help="pilot: the most one table may take (estimated)")
    p.add_argument("--train-size", type=int, default=0, help="table: override the pilot's choice")
    p.add_argument("--noise-rates", type=float, nargs="+", default=None,
                   help="pilot default: 0 0.2 0.4; table default: 0.4")
    p.add_argument("--methods", nargs="+", choices=METHODS,
                   default=[m for m in METHODS if m != "jvp-onestep"],
                   help="jvp-onestep (train.py --one-step) needs --vnet-config paper, whose "
                        "meta-step loss is the update's")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--scale", choices=["t1t2", "none"], default="t1t2", help="EvoGrad's hypergradient scale")
    p.add_argument("--population", type=int, default=2,
                   help="EvoGrad K; other than 2, its runs are a row of their own (evograd-K<K>)")
    p.add_argument("--vnet-input", choices=["own", "fixed", "through"], default="own",
                   help="train.py --vnet-input for the MWN methods; other than 'own', a row of its own")
    p.add_argument("--vnet-config", choices=list(VNET_CONFIGS), default="official",
                   help="the weighting net's optimiser and size and the meta-step's weights: 'official' "
                        "MW-Net (Adam, mean) or the EvoGrad paper's (SGD, Nesterov, 200 hidden, normalised "
                        "by their sum); give each its own --out")
    p.add_argument("--timing-rounds", type=int, default=5, help="timing: interleaved rounds")
    p.add_argument("--timing-iterations", type=int, default=300, help="timing: iterations per run")
    p.add_argument("--quick", action="store_true", help="a tiny version (tests): few images, 2 epochs")
    args = p.parse_args(argv)
    if args.noise_rates is None:
        args.noise_rates = [0.0, 0.2, 0.4] if args.step == "pilot" else [0.4]
    if args.quick:
        args.train_sizes, args.epochs, args.batch_size, args.test_size = [200, 400], 2, 50, 200
        args.seeds, args.pilot_seeds = args.seeds[:2], args.pilot_seeds[:1]
        args.timing_rounds, args.timing_iterations = 1, 5
    return args


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    return {"pilot": pilot, "table": table, "report": report, "timing": timing}[args.step](args)


if __name__ == "__main__":
    main()
