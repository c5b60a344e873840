#!/usr/bin/env python3
"""How well each estimator gives the T1-T2 hypergradient, and what it costs.

At fixed weights (random initialisation, synthetic data), for four
applications shaped like the paper's, each estimator of ``evograd.ESTIMATORS``
(and the paper's estimator with antithetic pairs) is compared with the exact
one-step unrolled hypergradient (T1-T2 by double backward, float64):

  mwn       ResNet-32 and MWN's weighting net (301 hyperparameters) on
            per-example costs, the net's input detached at theta as in the
            official code (``evograd.detached``)
  lft       RelationNet with a ResNet-10 backbone and FT layers inside it;
            pseudo-seen episode with FT on, pseudo-unseen with FT off; one FT
            draw per step for every method
  metaxl    a small XLM-R-shaped encoder with the RTN after layer 1; all
            encoder parameters unrolled, as the official step does
  rotation  LeNet and one rotation angle (degrees)

Quality (float64): single-step cosine with T1-T2 (mean over --seeds), cosine
of the mean of 10 and --steps steps, norm ratio of that mean (after the
documented scale), fraction of collapsed steps. Cost (float32, each method in
fresh processes): median time per step, and peak memory growth with large
blocks mmapped so that RSS follows the live tensors, beside a
plain training step, the same step with the gradient of lambda too (the
least any method that learns lambda computes: for rotation it runs back
through the whole network to the input) and T1-T2. Prints tables, writes
JSON and a plot.

    .venv/bin/python examples/estimators/compare.py --out results/estimators_cpu
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from tqdm import tqdm  # noqa: E402

import evograd  # noqa: E402
from common.measure import EXACT_RSS_ENV, PeakMemory, timed  # noqa: E402
from evograd.baselines import t1t2_step  # noqa: E402

APPS = ("mwn", "lft", "metaxl", "rotation")
ESTIMATORS = {  # name -> EvoGrad options (each on T1-T2's scale)
    "evograd": dict(estimator="evograd", population=2, sigma=1e-3, temperature=0.05,
                    scale="t1t2", common_random_numbers=True),
    "evograd-antithetic": dict(estimator="evograd", population=2, sigma=1e-3, temperature=0.05,
                               antithetic=True, scale="t1t2", common_random_numbers=True),
    "lookahead": dict(estimator="lookahead"),
    "jvp": dict(estimator="jvp"),
}
COST_METHODS = ("plain", "plain+hyper", "t1t2", "evograd", "lookahead", "jvp")
ALPHA = 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--apps", nargs="+", default=list(APPS), choices=APPS)
    p.add_argument("--seeds", type=int, default=20, help="single steps for the single-step cosine")
    p.add_argument("--steps", type=int, default=100, help="steps averaged for the mean's cosine")
    p.add_argument("--repeats", type=int, default=20, help="timed steps per method (cost part; their median)")
    p.add_argument("--no-cost", action="store_true", help="skip the time and memory part")
    p.add_argument("--no-quality", action="store_true", help="skip the quality part")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/local/estimators")
    p.add_argument("--worker", nargs=3, metavar=("APP", "METHOD", "MEASURE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build(app, dtype):
    """model, hyperparameters, module, train closure, val closure, params to perturb."""
    torch.manual_seed(0)
    if app == "mwn":
        mwn = _load("mwn_models", "mwn/models.py")
        model, vnet = mwn.ResNet32(in_channels=1).to(dtype), mwn.WeightingNet(100).to(dtype)
        x, y = torch.randn(32, 1, 28, 28, dtype=dtype), torch.randint(10, (32,))
        xv, yv = torch.randn(32, 1, 28, 28, dtype=dtype), torch.randint(10, (32,))

        def train():
            model.train()
            cost = F.cross_entropy(model(x), y, reduction="none").reshape(-1, 1)
            return (cost * vnet(evograd.detached(cost))).sum() / len(cost)

        def val():
            return F.cross_entropy(model(xv), yv)
        return model, list(vnet.parameters()), train, val, list(model.parameters())
    if app == "lft":
        lft_models = _load("lft_models", "lft/models.py")
        model = lft_models.RelationNet(depth=10).to(dtype)
        n_way = 5

        def episode():
            return (torch.randn(n_way, 3, 32, 32, dtype=dtype), torch.randn(n_way, 3, 32, 32, dtype=dtype),
                    torch.arange(n_way))
        seen, unseen = episode(), episode()

        def train():
            model.train()
            model.set_ft(True)
            return model.loss(*seen, n_way)[0]

        def val():
            model.eval()
            model.set_ft(False)
            return model.loss(*unseen, n_way)[0]
        return model, model.ft_parameters(), train, val, model.model_parameters()
    if app == "metaxl":
        mx = _load("metaxl_model", "metaxl/model.py")
        model, rtn = mx.Encoder().to(dtype), mx.RTN(64).to(dtype)

        def batch(n):
            return torch.randint(1, 2000, (n, 16)), torch.randint(9, (n, 16))
        (src, src_tags), (tgt, tgt_tags), (tv, tv_tags) = batch(8), batch(8), batch(8)
        tokens, tags = torch.cat([src, tgt]), torch.cat([src_tags, tgt_tags])
        rows = torch.arange(16) < 8
        mask = torch.ones_like(tokens, dtype=torch.bool)

        def train():
            model.train()
            return F.cross_entropy(model(tokens, mask, rtn, rows).flatten(0, 1), tags.flatten())

        def val():
            model.train()
            return F.cross_entropy(model(tv, mask[:8]).flatten(0, 1), tv_tags.flatten())
        return model, list(rtn.parameters()), train, val, list(model.parameters())
    rot = _load("rotation_models", "rotation/models.py")
    rotate = _load("rotation_rotate", "rotation/rotate.py").rotate
    model = rot.LeNet().to(dtype)
    angle = torch.tensor(5.0, dtype=dtype, requires_grad=True)
    x, y = torch.rand(64, 1, 28, 28, dtype=dtype), torch.randint(10, (64,))
    xv, yv = rotate(torch.rand(64, 1, 28, 28, dtype=dtype), 30.0), torch.randint(10, (64,))

    def train():
        return F.cross_entropy(model(rotate(x, angle)), y)

    def val():
        return F.cross_entropy(model(xv), yv)
    return model, [angle], train, val, list(model.parameters())


def _load(name, relative):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, HERE.parent / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exact_t1t2(model, hyper, train, val, params, rng):
    """T1-T2 by double backward; buffers (BatchNorm statistics) as the
    estimators see them: restored before the validation forward."""
    names = {id(p): n for n, p in model.named_parameters()}
    keys = [names[id(p)] for p in params]
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def at(Q, fn, restore):
        if restore:  # through .data: the training graph saved these buffers
            with torch.no_grad():
                for n, b in model.named_buffers():
                    b.data.copy_(buffers[n])
        with torch.nn.utils.stateless._reparametrize_module(model, dict(zip(keys, Q))):
            return fn()
    for h in hyper:
        h.grad = None
    torch.set_rng_state(rng)
    t1t2_step(params, hyper, lambda Q: at(Q, train, False), lambda Q: at(Q, val, True), ALPHA)
    at(params, lambda: None, True)
    return torch.cat([h.grad.flatten() for h in hyper])


def quality(app, args):
    model, hyper, train, val, params = build(app, torch.float64)
    rng = torch.get_rng_state()
    reference = exact_t1t2(model, hyper, train, val, params, rng)
    rows = []
    for name, options in ESTIMATORS.items():
        meta = evograd.EvoGrad(params if len(params) < len(list(model.parameters())) else model,
                               hyper, inner_lr=ALPHA, seed=0, module=model
                               if len(params) < len(list(model.parameters())) else None, **options)
        deterministic = options["estimator"] != "evograd"
        n = 1 if deterministic else max(args.seeds, args.steps)
        samples, collapsed = [], 0
        for _ in tqdm(range(n), desc=f"{app} {name}", leave=False):
            for h in hyper:
                h.grad = None
            torch.set_rng_state(rng)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                r = meta.step(train, val)
            collapsed += int(r.collapsed)
            samples.append(torch.cat([h.grad.flatten() for h in hyper]))
        S = torch.stack(samples)

        def cos(v):
            return float(v @ reference / (v.norm() * reference.norm()))
        single = [cos(v) for v in S[:args.seeds]]
        mean10, mean_all = S[:10].mean(0), S[:args.steps].mean(0)
        rows.append(dict(app=app, estimator=name, single_cos=statistics.mean(single),
                         single_cos_sd=statistics.pstdev(single) if len(single) > 1 else 0.0,
                         mean10_cos=cos(mean10), mean_cos=cos(mean_all),
                         norm_ratio=float(mean_all.norm() / reference.norm()),
                         collapsed=collapsed / n, steps=n))
    return rows


def worker(app, method, measure, repeats):
    """One method's peak memory growth ("memory") or median time ("time")."""
    model, hyper, train, val, params = build(app, torch.float32)
    partial = len(params) < len(list(model.parameters()))

    def plain(wrt=()):
        loss = train()
        grads = torch.autograd.grad(loss, list(params) + list(wrt), allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.sub_(0.0 * g)
    if method == "plain":
        fn = plain
    elif method == "plain+hyper":
        fn = lambda: plain(hyper)  # noqa: E731
    elif method == "t1t2":
        names = {id(p): n for n, p in model.named_parameters()}
        keys = [names[id(p)] for p in params]

        def at(Q, f):
            with torch.nn.utils.stateless._reparametrize_module(model, dict(zip(keys, Q))):
                return f()
        fn = lambda: t1t2_step(params, hyper, lambda Q: at(Q, train), lambda Q: at(Q, val), ALPHA)  # noqa: E731
    else:
        options = dict(ESTIMATORS[method])
        meta = evograd.EvoGrad(params if partial else model, hyper, inner_lr=ALPHA, seed=0,
                               module=model if partial else None, **options)
        fn = lambda: meta.step(train, val)  # noqa: E731
    warnings.simplefilter("ignore")
    # A warm-up step first: the first backward of a process also starts
    # autograd's threads and torch's lazily built state (40 MiB of MetaXL's
    # 43), which the meta-step's constructor may already have paid for.
    fn()
    row = dict(app=app, method=method, parameters=sum(p.numel() for p in params),
               hyperparameters=sum(h.numel() for h in hyper),
               parameter_bytes=sum(p.numel() * p.element_size() for p in params))
    if measure == "memory":
        with PeakMemory("cpu") as mem:
            fn()
        return dict(row, peak_bytes=mem.peak_bytes)
    return dict(row, seconds=statistics.median([timed(fn, "cpu")[0] for _ in range(repeats)]))


def cost(app, args):
    """Each method's memory and time, each in a fresh process of its own."""
    def run(method, measure, env):
        out = subprocess.run([sys.executable, __file__, "--worker", app, method, measure,
                              "--repeats", str(args.repeats), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True, env={**os.environ, **env})
        return json.loads(out.stdout.strip().splitlines()[-1])
    return [{**run(method, "time", {}), **run(method, "memory", EXACT_RSS_ENV)} for method in COST_METHODS]


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(*args.worker, args.repeats)))
        return
    quality_rows, cost_rows = [], []
    for app in tqdm(args.apps, desc="applications"):
        if not args.no_quality:
            quality_rows += quality(app, args)
        if not args.no_cost:
            cost_rows += cost(app, args)
    print(f"\nQuality at fixed weights against exact T1-T2 (float64, alpha={ALPHA}):")
    print(f"{'app':9} {'estimator':19} {'1-step cos':>14} {'cos mean10':>10} "
          f"{'cos mean' + str(args.steps):>11} {'norm ratio':>10} {'collapsed':>9}")
    for r in quality_rows:
        print(f"{r['app']:9} {r['estimator']:19} {r['single_cos']:7.3f} ±{r['single_cos_sd']:5.3f} "
              f"{r['mean10_cos']:10.3f} {r['mean_cos']:11.3f} {r['norm_ratio']:10.3f} "
              f"{r['collapsed']:9.2f}")
    if cost_rows:
        print(f"\nCost per meta-step (float32, {args.threads} threads; memory: peak growth over a "
              f"warmed-up process; extra: over plain, in copies of the parameters):")
        print(f"{'app':9} {'method':11} {'seconds':>8} {'x plain':>8} {'MiB':>8} {'x plain':>8} "
              f"{'x plain+hyper':>13} {'extra':>6}")
        for r in cost_rows:
            def base(method):
                return next(b for b in cost_rows if b["app"] == r["app"] and b["method"] == method)
            plain = base("plain")
            print(f"{r['app']:9} {r['method']:11} {r['seconds']:8.3f} {r['seconds'] / plain['seconds']:8.2f} "
                  f"{r['peak_bytes'] / 2**20:8.1f} {r['peak_bytes'] / max(plain['peak_bytes'], 1):8.2f} "
                  f"{r['peak_bytes'] / max(base('plain+hyper')['peak_bytes'], 1):13.2f} "
                  f"{(r['peak_bytes'] - plain['peak_bytes']) / r['parameter_bytes']:6.2f}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(torch=torch.__version__, machine=platform.processor() or platform.machine(),
                threads=args.threads, alpha=ALPHA, seeds=args.seeds, steps=args.steps,
                memory_env=EXACT_RSS_ENV,
                command=" ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                date=datetime.date.today().isoformat())
    # Each row carries the run that measured it: a part skipped by a later
    # run keeps its rows, which must not take the later run's command.
    made_by = {k: meta[k] for k in ("command", "date", "torch", "machine", "threads")}
    quality_rows = [dict(r, **made_by) for r in quality_rows]
    cost_rows = [dict(r, **made_by) for r in cost_rows]
    saved = out / "estimators.json"
    if saved.exists():  # a part skipped this time keeps its recorded rows
        old = json.loads(saved.read_text())
        quality_rows = quality_rows or old.get("quality", [])
        cost_rows = cost_rows or old.get("cost", [])
    saved.write_text(json.dumps(dict(meta=meta, quality=quality_rows, cost=cost_rows), indent=1))
    apps = [a for a in APPS if any(r["app"] == a for r in quality_rows)]
    if not apps:  # --no-quality into a new folder: nothing to plot yet
        print(f"wrote {saved} (no quality rows to plot)")
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = list(ESTIMATORS)
    for i, name in enumerate(names):
        vals = [next(r["single_cos"] for r in quality_rows if r["app"] == a and r["estimator"] == name)
                for a in apps]
        ax.bar([j + i * 0.25 for j in range(len(apps))], vals, 0.25, label=name)
    ax.set_xticks([j + 0.25 for j in range(len(apps))], apps)
    ax.set_ylabel("single-step cos with exact T1-T2")
    ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    ax.set_title(f"Estimators at fixed weights (torch {torch.__version__})")
    fig.tight_layout()
    fig.savefig(out / "estimators.png", dpi=120)
    print(f"wrote {saved} and {out / 'estimators.png'}")


if __name__ == "__main__":
    main()
