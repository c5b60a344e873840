#!/usr/bin/env python3
"""What a meta-step under autocast gives, against float32 on the same noise.

An MWN-style problem (an MLP classifier, a weighting net V as lambda) at
fixed weights: for each seed, one EvoGrad step in float32 and one under
``torch.autocast`` (bfloat16, float16) with the same noise, and the cosine
between their lambda-gradients. Under autocast the parameters stay float32
(the candidates are written there exactly) but each candidate's forward runs
in half precision, so the loss differences the weights are made from carry
that precision's rounding; the step warns when their differences are within
it (the "warned" column). Prints a table, writes JSON and a plot.

    .venv/bin/python examples/precision/autocast.py --out results/autocast_cpu
"""
import argparse
import json
import platform
import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

import evograd

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=20, help="noise seeds (one step each)")
    p.add_argument("--sigmas", type=float, nargs="+", default=[1e-3, 1e-2, 3e-2, 1e-1],
                   help="noise scales")
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="results/local/autocast", help="folder for JSON and PNG")
    return p.parse_args(argv)


def problem(device):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10)).to(device)
    vnet = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid()).to(device)
    x, y = torch.randn(128, 32, device=device), torch.randint(10, (128,), device=device)
    xv, yv = torch.randn(64, 32, device=device), torch.randint(10, (64,), device=device)

    def train():
        cost = F.cross_entropy(model(x), y, reduction="none").float().reshape(-1, 1)
        return (cost * vnet(cost.detach())).mean()

    def val():
        return F.cross_entropy(model(xv), yv)
    return model, vnet, train, val


def hypergradient(model, vnet, train, val, sigma, tau, seed, dtype, device):
    for p in vnet.parameters():
        p.grad = None
    meta = evograd.EvoGrad(model, vnet, sigma=sigma, temperature=tau, seed=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.autocast(device, dtype=dtype, enabled=dtype is not None):
            result = meta.step(train, val)
    rounding = any("rounding" in str(w.message) for w in caught)
    return torch.cat([p.grad.flatten() for p in vnet.parameters()]), result.collapsed, rounding


def supported(device):
    """The precisions this torch's autocast has on the device (the CPU's
    float16 came with torch 2)."""
    out = {}
    for name, dtype in DTYPES.items():
        try:
            with torch.autocast(device, dtype=dtype):
                pass
            out[name] = dtype
        except RuntimeError as e:
            print(f"{name}: not measured, {e}")
    return out


def main(argv=None):
    args = parse_args(argv)
    model, vnet, train, val = problem(args.device)
    dtypes = supported(args.device)
    rows = []
    bar = tqdm(total=len(args.sigmas) * len(dtypes) * args.seeds, desc="steps")
    for sigma in args.sigmas:
        for name, dtype in dtypes.items():
            cosines, collapsed, warned = [], 0, 0
            for seed in range(args.seeds):
                a, _, _ = hypergradient(model, vnet, train, val, sigma, args.temperature, seed, None,
                                        args.device)
                b, c, w = hypergradient(model, vnet, train, val, sigma, args.temperature, seed, dtype,
                                        args.device)
                cosines.append(float(a @ b / (a.norm() * b.norm())))
                collapsed += int(c)
                warned += int(w)
                bar.update()
            rows.append(dict(sigma=sigma, dtype=name, cosines=cosines, collapsed=collapsed, warned=warned,
                             mean=sum(cosines) / len(cosines), min=min(cosines)))
    bar.close()
    print(f"\n{'sigma':>8} {'autocast':>9} {'mean cos':>9} {'min cos':>8} {'collapsed':>9} "
          f"{'warned':>9}")
    for r in rows:
        print(f"{r['sigma']:8.0e} {r['dtype']:>9} {r['mean']:9.4f} {r['min']:8.4f} "
              f"{r['collapsed']:6d}/{args.seeds} {r['warned']:6d}/{args.seeds}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(torch=torch.__version__, machine=platform.processor() or platform.machine(),
                device=args.device, temperature=args.temperature, seeds=args.seeds)
    (out / "autocast.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for i, r in enumerate(rows):
        ax.scatter([i] * len(r["cosines"]), r["cosines"], s=10, alpha=0.6)
    ax.set_xticks(range(len(rows)), [f"{r['dtype']}\nσ={r['sigma']:g}" for r in rows])
    ax.set_ylabel("cos(λ-grad, float32's)")
    ax.set_title(f"EvoGrad under autocast ({args.device}, torch {torch.__version__})")
    fig.tight_layout()
    fig.savefig(out / "autocast.png", dpi=120)
    print(f"wrote {out / 'autocast.json'} and {out / 'autocast.png'}")


if __name__ == "__main__":
    main()
