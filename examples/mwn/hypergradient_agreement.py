#!/usr/bin/env python3
"""Does EvoGrad's Meta-Weight-Net hypergradient point where T1-T2's does?

At a few training states (the MLP trained on the noisy labels for W
iterations, the weighting net V at its initialisation), for a few fixed
pairs of training batch and meta batch, computes the weighting net's
hypergradient four ways:

  t1t2           MWN's official step: fast weights theta - lr * grad of
                 mean(l_i * V(l_i)), V seeing the losses detached.
  t1t2-through   the same, with V's input not detached: the objective in
                 which a change of theta also moves V's input.
  evograd        the plugin's step as examples/mwn/methods.py makes it: each
                 candidate's loss is mean(l_i(theta_k) * V(l_i(theta_k))), so
                 V's input moves with the candidate (scale='t1t2').
  evograd-fixed  the same step with V's input held at the current theta's
                 losses, mean(l_i(theta_k) * V(l_i(theta))): the finite
                 difference then sees only what T1-T2's detach leaves.

EvoGrad is averaged over --samples noise draws. Reported: cosines between
the (averaged) hypergradients, the mean cosine of a single EvoGrad step with
T1-T2 (how noisy one step is), and the direction in which one descent step
moves the weight gap: mean V on corrupted minus mean V on clean examples of
the batch (negative: corrupted examples lose weight, as MWN intends).

    .venv/bin/python examples/mwn/hypergradient_agreement.py --threads 1 --out results/mwn_noisy
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

import data  # noqa: E402
import evograd  # noqa: E402
import train  # noqa: E402
from evograd import baselines  # noqa: E402
from methods import MWNTrainer, weighted_loss  # noqa: E402
from models import WeightingNet, classifier  # noqa: E402

WAYS = ("t1t2", "t1t2-through", "evograd", "evograd-fixed")


def flat(vnet):
    return torch.cat([p.grad.flatten() for p in vnet.parameters()]).double()


def cos(a, b):
    return (a @ b / (a.norm() * b.norm())).item()


def hypergradients(trainer, vnet, x, y, xm, ym, samples, seed):
    model, lr = trainer.model, trainer.lr
    params, vparams = list(model.parameters()), list(vnet.parameters())
    out = {}

    def t1t2(through):
        def train_fn(Q):
            cost = F.cross_entropy(trainer._functional(Q, x), y, reduction="none").reshape(-1, 1)
            return (cost * vnet(cost if through else cost.detach())).mean()
        vnet.zero_grad(set_to_none=True)
        baselines.t1t2_step(params, vparams, train_fn,
                            lambda Q: F.cross_entropy(trainer._functional(Q, xm), ym), lr=lr)
        return flat(vnet)

    out["t1t2"], out["t1t2-through"] = t1t2(False), t1t2(True)
    with torch.no_grad():
        cost0 = F.cross_entropy(model(x), y, reduction="none").reshape(-1, 1)
    closures = {"evograd": lambda: weighted_loss(model(x), y, vnet),
                "evograd-fixed": lambda: (F.cross_entropy(model(x), y, reduction="none").reshape(-1, 1)
                                          * vnet(cost0)).mean()}
    singles = {}
    for way, train_fn in closures.items():
        meta = evograd.EvoGrad(model, vnet, population=trainer.population, sigma=trainer.sigma,
                               temperature=trainer.temperature, seed=seed, scale="t1t2", inner_lr=lr)
        draws = []
        for _ in range(samples):
            vnet.zero_grad(set_to_none=True)
            meta.step(train_fn, lambda: F.cross_entropy(model(xm), ym))
            draws.append(flat(vnet))
        draws = torch.stack(draws)
        out[way] = draws.mean(0)
        singles[way] = draws
    vnet.zero_grad(set_to_none=True)
    return out, singles


def gap_gradient(vnet, cost, corrupted):
    """d/d lambda of (mean V on corrupted - mean V on clean) at these losses."""
    vnet.zero_grad(set_to_none=True)
    v = vnet(cost.reshape(-1, 1)).flatten()
    (v[corrupted].mean() - v[~corrupted].mean()).backward()
    g = flat(vnet)
    vnet.zero_grad(set_to_none=True)
    return g, (v[corrupted].mean() - v[~corrupted].mean()).item()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--warmups", type=int, nargs="+", default=[0, 100, 400, 1500],
                   help="baseline SGD iterations before measuring")
    p.add_argument("--batches", type=int, default=4, help="batch pairs per state")
    p.add_argument("--samples", type=int, default=100, help="EvoGrad draws per batch pair")
    p.add_argument("--train-size", type=int, default=5000)
    p.add_argument("--noise-rate", type=float, default=0.4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="write hypergradient_agreement.{json,md} here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    targs = train.parse_args(["--model", "mlp", "--noise-rate", str(args.noise_rate), "--seed", str(args.seed),
                              "--train-size", str(args.train_size), "--test-size", "1"])
    ds = train.prepare(targs)
    torch.manual_seed(args.seed)
    model, vnet = classifier("mlp"), WeightingNet(targs.vnet_hidden)
    trainer = MWNTrainer(model, vnet, "baseline", lr=targs.lr)
    batches = data.Batches(*ds["train"], 100, args.seed)
    meta_batches = data.Batches(*ds["meta"], 100, args.seed + 1)
    rows, done = [], 0
    for warmup in sorted(args.warmups):
        while done < warmup:
            (x, y), (xm, ym) = next(batches), next(meta_batches)
            trainer.iteration(x, y, xm, ym)
            done += 1
        for b in range(args.batches):
            (x, y), (xm, ym) = next(batches), next(meta_batches)
            corrupted = ds["mask"][batches.last]
            t0 = time.time()
            g, singles = hypergradients(trainer, vnet, x, y, xm, ym, args.samples, seed=1000 * warmup + b)
            with torch.no_grad():
                cost = F.cross_entropy(model(x), y, reduction="none")
            dgap, gap = gap_gradient(vnet, cost, corrupted)
            row = {"warmup": warmup, "batch": b, "gap": gap,
                   "loss_clean": cost[~corrupted].mean().item(), "loss_corrupted": cost[corrupted].mean().item(),
                   "norm": {w: g[w].norm().item() for w in WAYS},
                   # a descent step -g changes the gap by -dgap.g: per unit step length
                   "gap_change": {w: -(dgap @ g[w]).item() / g[w].norm().item() for w in WAYS},
                   "cos": {f"{a} | {b_}": cos(g[a], g[b_]) for i, a in enumerate(WAYS) for b_ in WAYS[i + 1:]},
                   "single_step_cos_t1t2": {w: torch.stack([torch.tensor(cos(s, g["t1t2"])) for s in singles[w]])
                                            .mean().item() for w in singles},
                   "single_step_cos_t1t2_through": {w: torch.stack([torch.tensor(cos(s, g["t1t2-through"]))
                                                                    for s in singles[w]]).mean().item()
                                                    for w in singles},
                   "seconds": time.time() - t0}
            rows.append(row)
            print(f"warmup {warmup:5d} batch {b}: cos(evograd, t1t2) {row['cos']['t1t2 | evograd']:+.3f}  "
                  f"cos(evograd, t1t2-through) {row['cos']['t1t2-through | evograd']:+.3f}  "
                  f"cos(evograd-fixed, t1t2) {row['cos']['t1t2 | evograd-fixed']:+.3f}  gap change "
                  + " ".join(f"{w} {row['gap_change'][w]:+.4f}" for w in WAYS), flush=True)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "hypergradient_agreement.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                                            "torch": torch.__version__, "rows": rows}, indent=1))
        write_markdown(rows, args, args.out / "hypergradient_agreement.md")
    return rows


def write_markdown(rows, args, path):
    def mean(xs):
        return sum(xs) / len(xs)
    lines = [f"MWN hypergradient of the weighting net, MLP on {args.train_size} Fashion-MNIST images at "
             f"{100 * args.noise_rate:.0f}% noise, V at initialisation; mean over {args.batches} batch pairs "
             f"per state, EvoGrad averaged over {args.samples} noise draws (K=2, sigma 1e-3, tau 0.05, "
             f"scale='t1t2'); {time.strftime('%Y-%m-%d')}.", "",
             "| baseline iterations | cos(EvoGrad, T1-T2) | cos(EvoGrad, T1-T2 through V's input) "
             "| cos(EvoGrad fixed-input, T1-T2) | one EvoGrad step vs T1-T2 (mean cos) "
             "| one fixed-input step vs T1-T2 | gap change: T1-T2 / through / EvoGrad / fixed |",
             "|---|---|---|---|---|---|---|"]
    for w in sorted({r["warmup"] for r in rows}):
        rs = [r for r in rows if r["warmup"] == w]
        lines.append(f"| {w} | {mean([r['cos']['t1t2 | evograd'] for r in rs]):+.3f} "
                     f"| {mean([r['cos']['t1t2-through | evograd'] for r in rs]):+.3f} "
                     f"| {mean([r['cos']['t1t2 | evograd-fixed'] for r in rs]):+.3f} "
                     f"| {mean([r['single_step_cos_t1t2']['evograd'] for r in rs]):+.3f} "
                     f"| {mean([r['single_step_cos_t1t2']['evograd-fixed'] for r in rs]):+.3f} "
                     f"| " + " / ".join(f"{mean([r['gap_change'][k] for r in rs]):+.4f}" for k in WAYS) + " |")
    lines += ["", "Gap change: how one unit-length descent step along each hypergradient moves mean V on "
              "corrupted minus mean V on clean examples of the batch (negative: corrupted examples lose weight)."]
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
