#!/usr/bin/env python3
"""EvoGrad's sensitivity to its temperature tau, noise scale sigma and
population K on the rotation task (issue 15, section 3), with the entropy
of the softmax weights recorded at every meta-step.

Shorter runs than table.py (one true angle, --iterations 200 by default),
5 seeds per setting:

  * tau in {0.01, 0.05, 0.5} x K in {2, 4, 8} at sigma = 1e-3;
  * tau in {0.01, 0.05, 0.5} x sigma in {1e-4, 1e-2, 3e-2} at K = 2;
  * a scale-free temperature, tau_t = c * (max_k L_k - min_k L_k) of the
    step's own candidate losses, prototyped here in plain PyTorch (full
    candidate copies and torch.func.functional_call, not the plugin), with
    a control run of the same plain code at the fixed tau = 0.05;
  * the ReLU/max-pool LeNet at sigma = 1e-3 and 1e-2 (tau = 0.05, K = 2);
  * T1-T2 at the same settings (both LeNet flavours), for reference.

Adam's eps on lambda is 1e-12 here (train.py: 1e-8): EvoGrad's own
hypergradient scales as sigma^2 / tau, about 2e-8 at sigma = 1e-4 and
tau = 0.5, where eps = 1e-8 would damp the steps and confound the sweep;
one setting keeps eps = 1e-8 to show it.

    .venv/bin/python examples/rotation/sensitivity.py

Writes results/rotation/sensitivity.json and sensitivity.png; each run is
cached under --cache (git-ignored) so an interrupted sweep resumes.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

import train  # noqa: E402
from methods import RotationTrainer, entropy  # noqa: E402
from table import dumps  # noqa: E402

TAUS = (0.01, 0.05, 0.5)
META_EPS = 1e-12


class PlainEvoGradTrainer(RotationTrainer):
    """EvoGrad's meta-step written out in plain PyTorch, with the temperature
    either fixed (`spread_c=None`) or set each step from the candidates'
    own losses: tau_t = spread_c * (max_k L_k - min_k L_k), treated as a
    constant in the backward pass. With K = 2 this fixes the weights at
    softmax(+-1/spread_c) whatever the scale of the losses."""

    def __init__(self, *args, spread_c=None, **kw):
        super().__init__(*args, **kw)
        self.spread_c, self.K, self.sigma = spread_c, kw["population"], kw["sigma"]
        self.fixed_tau = kw["temperature"]
        self.gen = torch.Generator().manual_seed(10_007 + kw["seed"])
        self.log["tau"] = []

    def meta_update(self, x, y, xv, yv):
        self.meta_opt.zero_grad()
        base = [p.detach() for p in self.model.parameters()]
        cands = [[b + self.sigma * (torch.randint(0, 2, b.shape, generator=self.gen, dtype=b.dtype) * 2 - 1)
                  for b in base] for _ in range(self.K)]
        losses = torch.stack([self.train_loss(x, y, self.angle, self._functional(c)) for c in cands])
        spread = float((losses.max() - losses.min()).detach())
        tau = self.fixed_tau if self.spread_c is None else max(self.spread_c * spread, 1e-8)
        w = torch.softmax(-losses / tau, 0)
        theta = [sum(w[k] * cands[k][i] for k in range(self.K)) for i in range(len(base))]
        val = F.cross_entropy(self._functional(theta)(xv), yv)
        (self.angle.grad,) = torch.autograd.grad(val, [self.angle])
        self.log["entropy"].append(entropy(w.detach()))
        self.log["loss_spread"].append(spread)
        self.log["tau"].append(tau)
        self.log["hypergradient"].append(float(self.angle.grad))
        self.log["val_loss"].append(val.item())
        self.meta_opt.step()
        if self.meta_sched is not None:
            self.meta_sched.step()
        return val.item()


def configs():
    out = []
    for K in (2, 4, 8):
        for tau in TAUS:
            out.append(dict(group="tau x K (sigma 1e-3)", K=K, sigma=1e-3, tau=tau))
    for sigma in (1e-4, 1e-2, 3e-2):
        for tau in TAUS:
            out.append(dict(group="tau x sigma (K 2)", K=2, sigma=sigma, tau=tau))
    out.append(dict(group="plain control", K=2, sigma=1e-3, tau=0.05, rule="plain"))
    for K, sigma in ((2, 1e-3), (2, 3e-2), (4, 1e-3)):
        out.append(dict(group="scale-free tau", K=K, sigma=sigma, tau=None, rule="spread", c=1.0))
    for sigma in (1e-3, 1e-2):
        out.append(dict(group="ReLU LeNet", K=2, sigma=sigma, tau=0.05, model="relu"))
    out.append(dict(group="Adam eps 1e-8", K=2, sigma=1e-4, tau=0.5, meta_eps=1e-8))
    out.append(dict(group="T1-T2", method="t1t2"))
    out.append(dict(group="T1-T2", method="t1t2", model="relu"))
    for c in out:
        c.setdefault("method", "evograd")
        c.setdefault("rule", "plugin")
        c.setdefault("model", "classic")
        c.setdefault("meta_eps", META_EPS)
    return out


def name(c):
    eps = "" if c["meta_eps"] == META_EPS else f"_eps{c['meta_eps']:g}"
    if c["method"] == "t1t2":
        return "t1t2" + ("" if c["model"] == "classic" else f"_{c['model']}") + eps
    tau = f"c{c['c']:g}spread" if c["rule"] == "spread" else f"tau{c['tau']:g}"
    return f"{c['rule']}_{c['model']}_K{c['K']}_sigma{c['sigma']:g}_{tau}{eps}"


def label(c):
    if c["method"] == "t1t2":
        return "T1-T2" + ("" if c["model"] == "classic" else " (ReLU LeNet)")
    tau = f"τ={c['c']:g}·spread" if c["rule"] == "spread" else f"τ={c['tau']:g}"
    extra = {"plain": " (plain code)", "spread": " (plain code)"}.get(c["rule"], "")
    if c["meta_eps"] != META_EPS:
        extra += f", Adam eps {c['meta_eps']:g}"
    return f"{'ReLU ' if c['model'] == 'relu' else ''}K={c['K']}, σ={c['sigma']:g}, {tau}{extra}"


def one_run(c, seed, args):
    argv = ["--method", c["method"], "--angle", f"{args.angle:g}", "--seed", str(seed), "--quiet",
            "--iterations", str(args.iterations), "--train-size", str(args.train_size),
            "--val-size", str(args.val_size), "--test-size", str(args.test_size),
            "--model", c["model"], "--meta-eps", f"{c['meta_eps']:g}"]
    if c["method"] == "evograd":
        argv += ["--population", str(c["K"]), "--sigma", f"{c['sigma']:g}",
                 "--temperature", f"{c['tau'] if c['tau'] is not None else 0.05:g}"]
    targs = train.parse_args(argv)
    make = RotationTrainer
    if c["rule"] in ("plain", "spread"):
        def make(*a, **kw):
            return PlainEvoGradTrainer(*a, spread_c=c.get("c") if c["rule"] == "spread" else None, **kw)
    r = train.run(targs, make)
    return r


def summarise_run(r, c):
    """The per-run numbers the sweep keeps (trajectories of lambda and entropy rounded)."""
    keep = {k: r[k] for k in ("seed", "final_angle", "tail_mean_angle", "test_accuracy", "median_iteration_s",
                              "mean_weight_entropy", "median_loss_spread", "median_grad_l1", "median_grad_l2",
                              "median_abs_hypergradient")}
    keep["angle_trajectory"] = [round(v, 3) for v in r["angle_trajectory"]]
    ent = r["entropy_trajectory"]
    keep["entropy_trajectory"] = [round(v, 4) for v in ent[::5]]
    if c["method"] == "evograd":
        K = c["K"]
        keep["normalised_entropy"] = r["mean_weight_entropy"] / math.log(K)
        keep["share_steps_entropy_below_0.1_logK"] = sum(e < 0.1 * math.log(K) for e in ent) / len(ent)
        tau = c["tau"] if c["rule"] != "spread" else None
        if tau is not None:
            keep["median_spread_over_tau"] = r["median_loss_spread"] / tau
            keep["sigma_l1_over_tau"] = c["sigma"] * r["median_grad_l1"] / tau
            keep["sigma_l2_over_tau"] = c["sigma"] * r["median_grad_l2"] / tau
    return keep


def aggregate(c, runs, true_angle):
    ang = [r["final_angle"] for r in runs]
    acc = [100 * r["test_accuracy"] for r in runs]
    out = dict(c, name=name(c), label=label(c), runs=runs,
               angle_mean=statistics.mean(ang), angle_sd=statistics.stdev(ang),
               abs_error_mean=statistics.mean(abs(a - true_angle) for a in ang),
               accuracy_mean=statistics.mean(acc), accuracy_sd=statistics.stdev(acc),
               ms_per_iteration=statistics.mean(1000 * r["median_iteration_s"] for r in runs))
    for k in ("normalised_entropy", "share_steps_entropy_below_0.1_logK", "median_spread_over_tau",
              "sigma_l1_over_tau", "sigma_l2_over_tau", "median_loss_spread"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            out[k] = statistics.mean(vals)
    return out


def tau_invariance(results):
    """Max |lambda_t(tau) - lambda_t(tau=0.05)| over a run, same seed: with
    Adam on lambda, a hypergradient that only scales with 1/tau (the linear
    regime of the softmax) leaves the trajectory unchanged."""
    by = {(r["K"], r["sigma"], r["tau"]): r for r in results
          if r["group"] in ("tau x K (sigma 1e-3)", "tau x sigma (K 2)")}
    out = {}
    for (K, sigma, tau), r in by.items():
        ref = by.get((K, sigma, 0.05))
        if ref is None or tau == 0.05:
            continue
        diffs = [max(abs(a - b) for a, b in zip(x["angle_trajectory"], y["angle_trajectory"]))
                 for x, y in zip(r["runs"], ref["runs"])]
        out[f"K{K}_sigma{sigma:g}_tau{tau:g}"] = {"max_abs_difference_deg_per_seed": diffs}
    return out


def plot(results, true_angle, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, 2, figsize=(12.5, 9.5))
    ax_a, ax_e, ax_s, ax_v = axes[0][0], axes[0][1], axes[1][0], axes[1][1]
    grid = [r for r in results if r["group"] in ("tau x K (sigma 1e-3)", "tau x sigma (K 2)")]
    lines = [(f"K={K}, σ=1e-3", [r for r in grid if r["K"] == K and r["sigma"] == 1e-3]) for K in (2, 4, 8)]
    lines += [(f"K=2, σ={s:g}", [r for r in grid if r["K"] == 2 and r["sigma"] == s]) for s in (1e-4, 1e-2, 3e-2)]
    colours = ["#1b9e77", "#d95f02", "#7570b3", "#a6761d", "#e7298a", "#66a61e"]
    for i, ((lab, rs), col) in enumerate(zip(lines, colours)):
        rs = sorted(rs, key=lambda r: r["tau"])
        shift = 1.0 + 0.035 * (i - 2.5)  # spread the error bars apart on the log axis
        x = [r["tau"] * shift for r in rs]
        ax_a.errorbar(x, [r["angle_mean"] for r in rs], yerr=[r["angle_sd"] for r in rs], color=col,
                      marker="o", capsize=3, label=lab)
        ax_e.plot([r["tau"] for r in rs], [r["normalised_entropy"] for r in rs], color=col, marker="o", label=lab)
        for r in rs:
            ax_s.scatter(r["median_spread_over_tau"], r["abs_error_mean"], color=col, s=40,
                         marker={0.01: "v", 0.05: "o", 0.5: "^"}[r["tau"]])
    ax_a.axhline(true_angle, color="black", ls="--", lw=1.2, label=f"true angle {true_angle:+g}°")
    t12 = [r for r in results if r["method"] == "t1t2" and r["model"] == "classic"]
    if t12:
        ax_a.axhspan(t12[0]["angle_mean"] - t12[0]["angle_sd"], t12[0]["angle_mean"] + t12[0]["angle_sd"],
                     color="grey", alpha=0.2, label="T1-T2 (mean ± sd)")
    for ax in (ax_a, ax_e):
        ax.set_xscale("log")
        ax.set_xlabel("temperature τ")
        ax.grid(alpha=0.3)
    ax_a.set_ylabel("learned angle λ (degrees), mean ± sd over seeds")
    ax_a.set_title("learned angle vs temperature")
    ax_a.legend(fontsize=8, ncol=2)
    ax_e.set_ylabel("mean weight entropy / log K")
    ax_e.set_ylim(-0.03, 1.05)
    ax_e.set_title("softmax weight entropy (1 = uniform, 0 = winner-take-all)")
    ax_s.set_xscale("log")
    ax_s.set_xlabel("median candidate-loss spread / τ   (markers: ▼ τ=0.01, ● 0.05, ▲ 0.5)")
    ax_s.set_ylabel("mean |λ − true angle| (degrees)")
    ax_s.set_title("error vs how sharp the softmax is (colours as above)")
    ax_s.grid(alpha=0.3)
    ratio = next((r for r in grid if r["K"] == 2 and r["sigma"] == 1e-3 and r["tau"] == 0.01), None)
    if ratio:
        ax_s.text(0.02, 0.97, f"σ‖g‖₁/τ overstates the sharpness: at K=2, σ=1e-3, τ=0.01 it is "
                  f"{ratio['sigma_l1_over_tau']:.0f},\nthe loss spread/τ {ratio['median_spread_over_tau']:.2f} "
                  f"and the weight entropy {ratio['normalised_entropy']:.3f} of log K",
                  transform=ax_s.transAxes, va="top", fontsize=8)
    others = [r for r in results if r["group"] in ("T1-T2", "plain control", "scale-free tau", "ReLU LeNet",
                                                   "Adam eps 1e-8")]
    ref = next((r for r in results if r["group"] == "tau x K (sigma 1e-3)" and r["K"] == 2
                and r["tau"] == 0.05), None)
    if ref:
        others = [dict(ref, label="K=2, σ=1e-3, τ=0.05 (plugin)")] + others
    for i, r in enumerate(others):
        ys = [run["final_angle"] for run in r["runs"]]
        ax_v.scatter(ys, [i] * len(ys), color="#999999", s=14, zorder=2)
        ax_v.errorbar(r["angle_mean"], i, xerr=r["angle_sd"], color="black", marker="D", capsize=3, zorder=3)
    ax_v.set_yticks(range(len(others)))
    ax_v.set_yticklabels([r["label"] for r in others], fontsize=8)
    ax_v.axvline(true_angle, color="black", ls="--", lw=1.2)
    ax_v.invert_yaxis()
    ax_v.set_xlabel("learned angle λ (degrees): seeds (grey), mean ± sd (black)")
    ax_v.set_title("temperature rules, model flavour, T1-T2")
    ax_v.grid(alpha=0.3, axis="x")
    fig.suptitle("EvoGrad sensitivity on the rotation task (Fashion-MNIST, LeNet-5, true angle "
                 f"{true_angle:+g}°, {len(results[0]['runs'])} seeds)", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--angle", type=float, default=30.0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--train-size", type=int, default=12000)
    p.add_argument("--val-size", type=int, default=3000)
    p.add_argument("--test-size", type=int, default=2000)
    p.add_argument("--out", type=Path, default=Path("results/rotation"))
    p.add_argument("--cache", type=Path, default=Path("results/local/rotation/sensitivity"))
    p.add_argument("--replot", action="store_true", help="only redraw the plot from --out's JSON")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        doc = json.loads((args.out / "sensitivity.json").read_text())
        plot(doc["results"], doc["settings"]["angle"], args.out / "sensitivity.png")
        return doc
    args.cache.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    grid = [(c, s) for c in configs() for s in args.seeds]
    per_config, load, computed = {}, [os.getloadavg()[0]], 0
    bar = tqdm(grid, desc="sensitivity runs", dynamic_ncols=True)
    for c, seed in bar:
        path = args.cache / f"{name(c)}_angle{args.angle:+g}_it{args.iterations}_seed{seed}.json"
        if path.exists():
            r = json.loads(path.read_text())
        else:
            r = summarise_run(one_run(c, seed, args), c)
            path.write_text(json.dumps(r))
            load.append(os.getloadavg()[0])
            computed += 1
        per_config.setdefault(name(c), (c, []))[1].append(r)
        bar.set_postfix_str(f"{label(c)} s{seed}: λ={r['final_angle']:+.1f}°")
    results = [aggregate(c, runs, args.angle) for c, runs in per_config.values()]
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "cache", "replot")}
    settings.update(meta_eps=META_EPS, meta_lr=train.parse_args([]).meta_lr, batch_size=train.parse_args([]).batch_size,
                    wall_s_this_invocation=time.time() - t0, runs_computed=computed, runs_read_from_cache=len(grid) - computed,
                    load_average_samples=load, torch=torch.__version__)
    settings["estimated_training_s_all_runs"] = sum(run["median_iteration_s"] * args.iterations
                                                    for r in results for run in r["runs"])
    doc = {"settings": settings, "tau_invariance": tau_invariance(results), "results": results}
    (args.out / "sensitivity.json").write_text(dumps(doc))
    plot(results, args.angle, args.out / "sensitivity.png")
    print(f"{'setting':52s} {'angle':>14s} {'|err|':>6s} {'acc %':>6s} {'H/logK':>7s} {'spread/τ':>9s} {'σ|g|₁/τ':>8s}")
    for r in results:
        print(f"{r['label']:52s} {r['angle_mean']:+7.2f} ± {r['angle_sd']:4.2f} {r['abs_error_mean']:6.2f} "
              f"{r['accuracy_mean']:6.2f} {r.get('normalised_entropy', float('nan')):7.3f} "
              f"{r.get('median_spread_over_tau', float('nan')):9.3g} {r.get('sigma_l1_over_tau', float('nan')):8.3g}")
    return doc


if __name__ == "__main__":
    main()
