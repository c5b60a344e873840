#!/usr/bin/env python3
"""How well each estimator gives the T1-T2 hypergradient, and what it costs.

At fixed weights (random initialisation, synthetic data), for four
applications with the official models' structure and the official closures'
own ``.detach()``/``.data``, each estimator of ``evograd.ESTIMATORS`` (and
the paper's estimator with antithetic pairs) is compared with the exact
one-step unrolled hypergradient (T1-T2 by double backward, float64):

  mwn       ResNet-32 (BatchNorm, ReLU) and MWN's weighting net (301
            hyperparameters) on per-example costs taken with ``.data``
  lft       RelationNet with a ResNet-10 backbone (7x7 stem, max-pool) and FT
            layers inside every block (kinds: gamma, beta), --lft-size
            pixels; pseudo-seen episode with FT on, pseudo-unseen with FT
            off; one FT draw per step for every method
  metaxl    a small XLM-R-shaped encoder (LayerNorm, attention, dropout) with
            the RTN after layer 1 on ``h.detach()``; all encoder parameters
            unrolled, as the official step does
  rotation  LeNet and one rotation angle (degrees)

Quality, for each --dtypes (the estimator in that dtype, on the same weights,
data and random draws; the reference always float64; MetaXL's float32 rows
without dropout, whose masks differ between dtypes; "autocast-bfloat16" and
"autocast-float16": float32 weights, both closures under torch.autocast, and
the t1t2 row is T1-T2 under the same autocast, what the official step gives
there): single-step cosine with
T1-T2 (mean over --seeds), per kind of hyperparameter too, cosine of the mean
of 10 and --steps steps, norm ratio of that mean (after the documented
scale), fraction of collapsed steps, and the cosine with T1-T2 in the
same precision. An estimator that refuses a precision (lookahead under
autocast) gets a row saying so. Cost (for each --cost-precisions, each method in
fresh processes): median time per step, and peak memory growth with large
blocks mmapped so that RSS follows the live tensors, beside a
plain training step, the same step with the gradient of lambda too (the
least any method that learns lambda computes: for rotation it runs back
through the whole network to the input) and T1-T2. --iteration-cost: the
same measures for a whole training iteration, the meta-step and the model's
update (forward, backward, SGD step): plain training, T1-T2, jvp, and jvp
with keep_train_grad, whose update steps on the gradient the meta-step left
in .grad instead of running its own forward and backward. Prints tables,
writes JSON and plots.

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
# name -> (the weights' dtype, the closures' autocast dtype or None)
DTYPES = {"float64": ("float64", None), "float32": ("float32", None),
          "autocast-bfloat16": ("float32", "bfloat16"), "autocast-float16": ("float32", "float16")}
COST_METHODS = ("plain", "plain+hyper", "t1t2", "evograd", "lookahead", "jvp")
ITERATION_METHODS = ("plain", "t1t2", "jvp", "jvp-onestep")
ALPHA = 0.1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--apps", nargs="+", default=list(APPS), choices=APPS)
    p.add_argument("--seeds", type=int, default=20, help="single steps for the single-step cosine")
    p.add_argument("--steps", type=int, default=100, help="steps averaged for the mean's cosine")
    p.add_argument("--repeats", type=int, default=20, help="timed steps per method (cost part; their median)")
    p.add_argument("--no-cost", action="store_true", help="skip the time and memory part")
    p.add_argument("--no-quality", action="store_true", help="skip the quality part")
    p.add_argument("--iteration-cost", action="store_true",
                   help="also measure whole iterations (meta-step + model update): plain, T1-T2, "
                        "jvp, jvp with keep_train_grad")
    p.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=DTYPES,
                   help="dtypes the estimators run in for the quality part")
    p.add_argument("--cost-precisions", nargs="+", default=["float32"],
                   choices=[d for d in DTYPES if d != "float64"],
                   help="precisions the cost part measures, each against plain and T1-T2 in it")
    p.add_argument("--lft-size", type=int, default=84, help="LFT episode images' side")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="results/local/estimators")
    p.add_argument("--worker", nargs=4, metavar=("APP", "METHOD", "MEASURE", "PRECISION"),
                   help=argparse.SUPPRESS)
    return p.parse_args(argv)


def build(app, dtype, lft_size=84, dropout=0.1):
    """model, hyperparameters by kind, train closure, val closure, params to
    unroll. Weights come from seed 0 and data from float32 draws, so that
    every dtype sees the same problem."""
    torch.manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape).to(dtype)
    if app == "mwn":
        mwn = _load("mwn_models", "mwn/models.py")
        model, vnet = mwn.ResNet32(in_channels=1).to(dtype), mwn.WeightingNet(100).to(dtype)
        x, y = randn(32, 1, 28, 28), torch.randint(10, (32,))
        xv, yv = randn(32, 1, 28, 28), torch.randint(10, (32,))

        def train():
            model.train()
            cost = F.cross_entropy(model(x), y, reduction="none").reshape(-1, 1)
            return (cost * vnet(cost.data)).sum() / len(cost)

        def val():
            return F.cross_entropy(model(xv), yv)
        return model, {"vnet": list(vnet.parameters())}, train, val, list(model.parameters())
    if app == "lft":
        lft_models = _load("lft_models", "lft/models.py")
        model = lft_models.RelationNet(depth=10).to(dtype)
        n_way = 5

        def episode():
            return (randn(n_way, 3, lft_size, lft_size), randn(n_way, 3, lft_size, lft_size),
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
        ft = [m for m in model.modules() if isinstance(m, lft_models.FeatureWiseTransformation)]
        kinds = {"gamma": [m.gamma for m in ft], "beta": [m.beta for m in ft]}
        return model, kinds, train, val, model.model_parameters()
    if app == "metaxl":
        mx = _load("metaxl_model", "metaxl/model.py")
        model, rtn = mx.Encoder(dropout=dropout).to(dtype), mx.RTN(64, torch.Tensor.detach).to(dtype)

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
        return model, {"rtn": list(rtn.parameters())}, train, val, list(model.parameters())
    rot = _load("rotation_models", "rotation/models.py")
    rotate = _load("rotation_rotate", "rotation/rotate.py").rotate
    model = rot.LeNet().to(dtype)
    angle = torch.tensor(5.0, dtype=dtype, requires_grad=True)
    x, y = torch.rand(64, 1, 28, 28).to(dtype), torch.randint(10, (64,))
    xv, yv = rotate(torch.rand(64, 1, 28, 28).to(dtype), 30.0), torch.randint(10, (64,))

    def train():
        return F.cross_entropy(model(rotate(x, angle)), y)

    def val():
        return F.cross_entropy(model(xv), yv)
    return model, {"angle": [angle]}, train, val, list(model.parameters())


def dtypes_of(name):
    """(torch dtype of the weights, autocast dtype or None) of a --dtypes name."""
    weights, cast = DTYPES[name]
    return getattr(torch, weights), (getattr(torch, cast) if cast else None)


def under_autocast(fn, cast):
    """The closure as a user writes it for mixed precision: autocast inside."""
    if cast is None:
        return fn

    def closure():
        with torch.autocast("cpu", dtype=cast):
            return fn()
    return closure


def flat(kinds):
    return [h for tensors in kinds.values() for h in tensors]


def _load(name, relative):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, HERE.parent / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def math_attention():
    """Double backward needs attention's math kernel: torch's fused CPU
    kernels have no derivative of their backward."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: math is what double backward gets
        import contextlib
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


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
    with math_attention():
        t1t2_step(params, hyper, lambda Q: at(Q, train, False), lambda Q: at(Q, val, True), ALPHA)
    at(params, lambda: None, True)
    return torch.cat([h.grad.flatten() for h in hyper])


def _same_weights(target, source):
    with torch.no_grad():
        for a, b in zip(list(target.parameters()) + list(target.buffers()),
                        list(source.parameters()) + list(source.buffers())):
            a.copy_(b)


def quality(app, args):
    rows = []
    for dtype_name in args.dtypes:
        dtype, cast = dtypes_of(dtype_name)
        # MetaXL's dropout masks differ between dtypes: its float32 rows run without
        dropout = 0.0 if (app == "metaxl" and dtype != torch.float64) else 0.1
        model64, kinds64, train64, val64, params64 = build(app, torch.float64, args.lft_size, dropout)
        rng = torch.get_rng_state()
        reference = exact_t1t2(model64, flat(kinds64), train64, val64, params64, rng)
        model, kinds, train, val, params = build(app, dtype, args.lft_size, dropout)
        train, val = under_autocast(train, cast), under_autocast(val, cast)
        _same_weights(model, model64)
        for h, h64 in zip(flat(kinds), flat(kinds64)):
            with torch.no_grad():
                h.copy_(h64)
        rows += _quality_rows(app, dtype_name, args, model, kinds, train, val, params, rng,
                              reference)
    return rows


def _quality_rows(app, dtype_name, args, model, kinds, train, val, params, rng, reference):
    hyper = flat(kinds)
    sizes = [sum(h.numel() for h in tensors) for tensors in kinds.values()]
    rows = []
    # T1-T2 itself in this dtype: what the official step gives users there
    official = exact_t1t2(model, hyper, train, val, params, rng).double()
    for name, options in [("t1t2", None)] + list(ESTIMATORS.items()):
        if options is None:
            S = official[None]
            rows.append(_row(app, dtype_name, name, args, S, reference, kinds, sizes, 0, 1,
                             official))
            continue
        partial = len(params) < len(list(model.parameters())) - len(hyper)
        meta = evograd.EvoGrad(params if partial else model, hyper, inner_lr=ALPHA, seed=0,
                               module=model if partial else None, **options)
        deterministic = options["estimator"] != "evograd"
        n = 1 if deterministic else max(args.seeds, args.steps)
        samples, collapsed = [], 0
        try:
            for _ in tqdm(range(n), desc=f"{app} {dtype_name} {name}", leave=False):
                for h in hyper:
                    h.grad = None
                torch.set_rng_state(rng)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    r = meta.step(train, val)
                collapsed += int(r.collapsed)
                samples.append(torch.cat([h.grad.double().flatten() for h in hyper]))
        except ValueError as e:  # an estimator that refuses this precision says why
            rows.append(dict(app=app, dtype=dtype_name, estimator=name, refused=str(e)))
            continue
        rows.append(_row(app, dtype_name, name, args, torch.stack(samples), reference, kinds,
                         sizes, collapsed, n, official))
    return rows


def _row(app, dtype_name, name, args, S, reference, kinds, sizes, collapsed, n, official):
    def cos(v, ref=reference):
        return float(v @ ref / (v.norm() * ref.norm()))
    single = [cos(v) for v in S[:args.seeds]]
    mean10, mean_all = S[:10].mean(0), S[:args.steps].mean(0)
    by_kind = {}
    for kind, part, ref in zip(kinds, S[0].split(sizes), reference.split(sizes)):
        by_kind[kind] = dict(cos=cos(part, ref), norm_ratio=float(part.norm() / ref.norm()))
    return dict(app=app, dtype=dtype_name, estimator=name, single_cos=statistics.mean(single),
                single_cos_sd=statistics.pstdev(single) if len(single) > 1 else 0.0,
                mean10_cos=cos(mean10), mean_cos=cos(mean_all),
                norm_ratio=float(mean_all.norm() / reference.norm()),
                same_precision_t1t2_cos=cos(S[0], official),
                same_precision_t1t2_ratio=float(mean_all.norm() / official.norm()),
                kinds=by_kind, collapsed=collapsed / n, steps=n)


def iteration(meta_step, params, train, optimizer, one_step):
    """A whole training iteration: the meta-step, then the model's update on
    the training loss (its own forward and backward, unless one_step: the
    meta-step left that gradient in .grad)."""
    def fn():
        optimizer.zero_grad(set_to_none=True)
        if meta_step is not None:
            meta_step()
        if not one_step:
            train().backward(inputs=list(params))
        optimizer.step()
    return fn


def worker(app, method, measure, precision, repeats):
    """One method's peak memory growth ("memory") or median time ("time");
    "iteration:<method>": a whole training iteration (see iteration())."""
    whole = method.startswith("iteration:")
    method = method.split(":")[-1]
    one_step = method == "jvp-onestep"
    dtype, cast = dtypes_of(precision)
    model, kinds, train, val, params = build(app, dtype)
    train, val = under_autocast(train, cast), under_autocast(val, cast)
    hyper = flat(kinds)
    partial = len(params) < len(list(model.parameters())) - len(hyper)

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
        options = dict(ESTIMATORS["jvp" if one_step else method], keep_train_grad=one_step)
        meta = evograd.EvoGrad(params if partial else model, hyper, inner_lr=ALPHA, seed=0,
                               module=model if partial else None, **options)
        fn = lambda: meta.step(train, val)  # noqa: E731
    if whole:
        # plain SGD keeps no state: the methods differ only in what they hold
        sgd = torch.optim.SGD(params, lr=1e-8)
        fn = iteration(None if method == "plain" else fn, params, train, sgd, one_step)
        method = f"iteration:{method}"
    warnings.simplefilter("ignore")
    # A warm-up step first: the first backward of a process also starts
    # autograd's threads and torch's lazily built state (40 MiB of MetaXL's
    # 43), which the meta-step's constructor may already have paid for.
    try:
        fn()
    except ValueError as e:  # lookahead under autocast
        return dict(app=app, method=method, precision=precision, refused=str(e))
    row = dict(app=app, method=method, precision=precision, parameters=sum(p.numel() for p in params),
               hyperparameters=sum(h.numel() for h in hyper),
               parameter_bytes=sum(p.numel() * p.element_size() for p in params))
    if measure == "memory":
        with PeakMemory("cpu") as mem:
            fn()
        return dict(row, peak_bytes=mem.peak_bytes)
    return dict(row, seconds=statistics.median([timed(fn, "cpu")[0] for _ in range(repeats)]))


def cost(app, args):
    """Each method's memory and time, each in a fresh process of its own."""
    def run(method, measure, precision, env):
        out = subprocess.run([sys.executable, __file__, "--worker", app, method, measure, precision,
                              "--repeats", str(args.repeats), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True, env={**os.environ, **env})
        return json.loads(out.stdout.strip().splitlines()[-1])
    methods = list(COST_METHODS) if not args.no_cost else []
    if args.iteration_cost:
        methods += [f"iteration:{m}" for m in ITERATION_METHODS]
    return [{**run(method, "time", precision, {}), **run(method, "memory", precision, EXACT_RSS_ENV)}
            for precision in args.cost_precisions for method in methods]


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(worker(*args.worker, repeats=args.repeats)))
        return
    quality_rows, cost_rows = [], []
    for app in tqdm(args.apps, desc="applications"):
        if not args.no_quality:
            quality_rows += quality(app, args)
        if not args.no_cost or args.iteration_cost:
            cost_rows += cost(app, args)
    if quality_rows:
        print_quality(quality_rows, args.steps)
    step_rows = [r for r in cost_rows if not r["method"].startswith("iteration:")]
    if step_rows:
        print_steps(step_rows, args.threads)
    whole = [r for r in cost_rows if r["method"].startswith("iteration:")]
    if whole:
        print_iterations(whole, args.threads)
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
    if saved.exists():  # a part or an application not run this time keeps its recorded rows
        old = json.loads(saved.read_text())

        def kept(part, new_rows):
            if not new_rows:
                return old.get(part, [])
            return [r for r in old.get(part, []) if r["app"] not in args.apps] + new_rows
        quality_rows, cost_rows = kept("quality", quality_rows), kept("cost", cost_rows)
    saved.write_text(json.dumps(dict(meta=meta, quality=quality_rows, cost=cost_rows), indent=1))
    if any(r["method"].startswith("iteration:") for r in cost_rows):
        plot_iterations([r for r in cost_rows if r["method"].startswith("iteration:")],
                        out / "iteration_cost.png")
    apps = [a for a in APPS if any(r["app"] == a for r in quality_rows)]
    if not apps:  # --no-quality into a new folder: nothing to plot yet
        print(f"wrote {saved} (no quality rows to plot)")
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in quality_rows)]
    fig, axes = plt.subplots(1, len(dtypes), figsize=(6 * len(dtypes), 3.5), squeeze=False)
    names = ["t1t2"] + list(ESTIMATORS)
    width = 0.8 / len(names)
    for ax, dtype_name in zip(axes[0], dtypes):
        for i, name in enumerate(names):
            vals = [next((r.get("single_cos", 0.0) for r in quality_rows if r["app"] == a and
                          r["estimator"] == name and r["dtype"] == dtype_name), 0.0) for a in apps]
            ax.bar([j + i * width for j in range(len(apps))], vals, width, label=name)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(apps))], apps)
        ax.set_ylabel("single-step cos with exact T1-T2")
        ax.axhline(0.99, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{dtype_name} estimators, float64 T1-T2 (torch {torch.__version__})",
                     fontsize=9)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "estimators.png", dpi=120)
    print(f"wrote {saved} and {out / 'estimators.png'}")


def print_quality(quality_rows, steps):
    print(f"\nQuality at fixed weights against exact T1-T2 (float64 reference, alpha={ALPHA}; "
          "official .detach()/.data; per kind: one step's cos / norm ratio):")
    print(f"{'app':9} {'dtype':17} {'estimator':19} {'1-step cos':>14} {'cos mean10':>10} "
          f"{'cos mean' + str(steps):>11} {'norm ratio':>10} {'collapsed':>9} "
          f"{'cos same-precision T1-T2':>24}  per kind")
    for r in quality_rows:
        if "refused" in r:
            print(f"{r['app']:9} {r['dtype']:17} {r['estimator']:19} refused: {r['refused'][:90]}")
            continue
        kinds = "  ".join(f"{k} {v['cos']:.4f}/{v['norm_ratio']:.3f}" for k, v in r["kinds"].items())
        print(f"{r['app']:9} {r['dtype']:17} {r['estimator']:19} {r['single_cos']:7.3f} "
              f"±{r['single_cos_sd']:5.3f} {r['mean10_cos']:10.3f} {r['mean_cos']:11.3f} "
              f"{r['norm_ratio']:10.3f} {r['collapsed']:9.2f} "
              f"{r['same_precision_t1t2_cos']:24.4f}  {kinds}")


def print_steps(cost_rows, threads):
    print(f"\nCost per meta-step ({threads} threads; memory: peak growth over a "
          f"warmed-up process; x plain: against plain training in the same precision; "
          f"extra: over plain, in copies of the parameters):")
    print(f"{'app':9} {'precision':17} {'method':11} {'seconds':>8} {'x plain':>8} {'MiB':>8} "
          f"{'x plain':>8} {'x plain+hyper':>13} {'extra':>6}")
    for r in cost_rows:
        precision = r.get("precision", "float32")
        if "refused" in r:
            print(f"{r['app']:9} {precision:17} {r['method']:11} refused")
            continue

        def base(method):
            return next(b for b in cost_rows if b["app"] == r["app"] and b["method"] == method
                        and b.get("precision", "float32") == precision)
        plain = base("plain")
        print(f"{r['app']:9} {precision:17} {r['method']:11} {r['seconds']:8.3f} "
              f"{r['seconds'] / plain['seconds']:8.2f} "
              f"{r['peak_bytes'] / 2**20:8.1f} {r['peak_bytes'] / max(plain['peak_bytes'], 1):8.2f} "
              f"{r['peak_bytes'] / max(base('plain+hyper')['peak_bytes'], 1):13.2f} "
              f"{(r['peak_bytes'] - plain['peak_bytes']) / r['parameter_bytes']:6.2f}")


def _against(rows, r, method):
    return next(b for b in rows if b["app"] == r["app"] and b["method"] == f"iteration:{method}"
                and b.get("precision") == r.get("precision"))


def print_iterations(rows, threads):
    print(f"\nCost per full iteration, meta-step + model update ({threads} threads; memory: "
          "peak growth over a warmed-up process):")
    print(f"{'app':9} {'precision':10} {'method':12} {'seconds':>8} {'x plain':>8} {'x T1-T2':>8} "
          f"{'MiB':>8} {'x plain':>8}")
    for r in rows:
        plain, t1t2 = _against(rows, r, "plain"), _against(rows, r, "t1t2")
        print(f"{r['app']:9} {r.get('precision', 'float32'):10} {r['method'][10:]:12} "
              f"{r['seconds']:8.3f} {r['seconds'] / plain['seconds']:8.2f} "
              f"{r['seconds'] / t1t2['seconds']:8.2f} {r['peak_bytes'] / 2**20:8.1f} "
              f"{r['peak_bytes'] / max(plain['peak_bytes'], 1):8.2f}")


def plot_iterations(rows, path):
    """Time against T1-T2's and memory against plain training's, per app."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    apps = [a for a in APPS if any(r["app"] == a for r in rows)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    width = 0.8 / len(ITERATION_METHODS)
    for i, m in enumerate(ITERATION_METHODS):
        mine = [next(r for r in rows if r["app"] == a and r["method"] == f"iteration:{m}")
                for a in apps]
        xs = [j + i * width for j in range(len(apps))]
        axes[0].bar(xs, [r["seconds"] / _against(rows, r, "t1t2")["seconds"] for r in mine],
                    width, label=m)
        axes[1].bar(xs, [r["peak_bytes"] / max(_against(rows, r, "plain")["peak_bytes"], 1)
                         for r in mine], width, label=m)
    for ax, title, target in ((axes[0], "time per iteration / T1-T2's", 0.5),
                              (axes[1], "peak memory / plain training's", 1.25)):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(apps))], apps)
        ax.axhline(target, color="grey", lw=0.8, ls="--")
        ax.set_title(f"{title} (torch {torch.__version__})", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
