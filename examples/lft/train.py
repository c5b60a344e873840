#!/usr/bin/env python3
"""Learned feature-wise transformation (LFT) for cross-domain few-shot
classification with a RelationNet, on small offline image domains (see
data.py). Each iteration samples a pseudo-seen and a pseudo-unseen domain
from the training domains; the model learns on the pseudo-seen episode with
FT active and the FT parameters are meta-learned from the pseudo-unseen loss
by T1-T2 or EvoGrad. Reports accuracy on the held-out domain with a 95%
confidence interval over test episodes.

    .venv/bin/python examples/lft/train.py --method evograd
"""
import argparse
import math
import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import data  # noqa: E402
from common.grid import run_and_report  # noqa: E402
from common.measure import PeakMemory, median, timed  # noqa: E402
from methods import METHODS, LFTTrainer  # noqa: E402
from models import RelationNet  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=METHODS, default="evograd")
    p.add_argument("--depth", type=int, choices=[10, 18, 34, 50], default=10)
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--n-way", type=int, default=5)
    p.add_argument("--k-shot", type=int, default=5)
    p.add_argument("--n-query", type=int, default=16)
    p.add_argument("--size", type=int, default=64, help="image side (224 in the paper)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ft-lr", type=float, default=1e-3)
    p.add_argument("--population", type=int, default=2)
    p.add_argument("--sigma", type=float, default=None, help="EvoGrad noise scale (default: --lr)")
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--test-episodes", type=int, default=200, help="per shot setting (1-shot and --k-shot)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


def to(ep, device):
    return tuple(t.to(device) for t in ep)


@torch.no_grad()
def evaluate(model, domain, args, device, g, k_shot):
    """Mean accuracy and 95% CI half-width over test episodes (16 queries per class)."""
    model.eval()
    model.set_ft(False)
    accs = []
    for _ in range(args.test_episodes):
        s, q, y = to(data.episode(domain, args.n_way, k_shot, 16, g), device)
        accs.append((model.scores(s, q, args.n_way).argmax(1) == y).float().mean().item())
    model.train()
    mean = sum(accs) / len(accs)
    sd = math.sqrt(sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1))
    return mean, 1.96 * sd / math.sqrt(len(accs))


def run(args):
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    domains = {d: data.load_domain(d, args.size) for d in data.TRAIN_DOMAINS}
    test_domain = data.load_domain(data.TEST_DOMAIN, args.size)
    model = RelationNet(args.depth).to(device)
    trainer = LFTTrainer(model, args.method, args.n_way, lr=args.lr, ft_lr=args.ft_lr,
                         population=args.population, sigma=args.sigma,
                         temperature=args.temperature, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed)
    times = []
    with PeakMemory(device) as mem:
        for _ in tqdm(range(args.iterations), desc=f"{args.method} ResNet-{args.depth}",
                      disable=args.quiet, dynamic_ncols=True):
            seen, unseen = [data.TRAIN_DOMAINS[i] for i in torch.randperm(len(domains), generator=g)[:2]]
            ep_s = to(data.episode(domains[seen], args.n_way, args.k_shot, args.n_query, g), device)
            ep_u = to(data.episode(domains[unseen], args.n_way, args.k_shot, args.n_query, g), device)
            dt, loss = timed(lambda: trainer.iteration(ep_s, ep_u), device)
            times.append(dt)
    results = {}
    for shots in sorted({1, args.k_shot}):
        acc, ci = evaluate(model, test_domain, args, device, torch.Generator().manual_seed(10_000 + args.seed), shots)
        results[f"{shots}-shot"] = {"accuracy": acc, "ci95": ci}
    ft = torch.cat([p.detach().flatten() for p in model.ft_parameters()])
    main_result = results[f"{args.k_shot}-shot"]
    return {"method": args.method, "depth": args.depth, "seed": args.seed, "iterations": args.iterations,
            "test_domain": data.TEST_DOMAIN, "accuracy": main_result["accuracy"], "ci95": main_result["ci95"],
            "by_shots": results, "final_loss": loss,
            "ft_mean": ft.mean().item(), "median_iteration_s": median(times[1:]),
            "peak_memory_mib": mem.peak_bytes / 2**20, "device": str(device), "torch": torch.__version__}


def main(argv=None):
    args = parse_args(argv)
    return run_and_report(run, args, lambda r: (f"{r['method']} ResNet-{args.depth}: {args.n_way}-way accuracy on {data.TEST_DOMAIN} ("
                  + ", ".join(f"{k} {100 * v['accuracy']:.2f} ± {100 * v['ci95']:.2f}%" for k, v in r["by_shots"].items())
                  + f"; {args.test_episodes} episodes) after {args.iterations} iterations; "
                  f"{r['median_iteration_s']:.2f} s/iteration"))


if __name__ == "__main__":
    main()
