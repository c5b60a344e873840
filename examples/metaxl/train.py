#!/usr/bin/env python3
"""MetaXL on a generated cross-lingual NER task: a transformer tagger trained
on an ample source language and ~100 target-language sentences, with the
representation transformation network (RTN) meta-learned by T1-T2 or by
EvoGrad (this plugin), or joint training (`jt`) without it. Reports
entity-level F1 on held-out target sentences.

    .venv/bin/python examples/metaxl/train.py --method evograd
"""
import argparse
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
from f1 import f1  # noqa: E402
from methods import METHODS, MetaXLTrainer  # noqa: E402
from model import RTN, Encoder  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=METHODS, default="evograd")
    p.add_argument("--iterations", type=int, default=1000)
    p.add_argument("--source-batch", type=int, default=16)
    p.add_argument("--target-batch", type=int, default=16, help="split in halves: train / meta")
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--ffn", type=int, default=128)
    p.add_argument("--vocab", type=int, default=2000)
    p.add_argument("--rtn-layer", type=int, default=1, help="apply the RTN after this layer")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--rtn-lr", type=float, default=1e-3)
    p.add_argument("--perturb", choices=["head", "all"], default="head",
                   help="EvoGrad: perturb the classification head (paper's code) or all parameters")
    p.add_argument("--population", type=int, default=2)
    p.add_argument("--sigma", type=float, default=1e-3)
    p.add_argument("--temperature", type=float, default=0.05)
    p.add_argument("--no-crn", action="store_true", help="EvoGrad: candidates draw their own dropout masks")
    p.add_argument("--target-train", type=int, default=100, help="labelled target sentences")
    p.add_argument("--test-size", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--quiet", action="store_true")
    return p.parse_args(argv)


class Sampler:
    def __init__(self, split, batch, seed, device):
        self.split, self.batch, self.device = split, batch, device
        self.g = torch.Generator().manual_seed(seed)

    def __next__(self):
        idx = torch.randint(0, len(self.split[0]), (self.batch,), generator=self.g)
        return tuple(t[idx].to(self.device) for t in self.split)


@torch.no_grad()
def evaluate(model, split, device, batch=200):
    model.eval()
    gold, pred = [], []
    tokens, tags, mask = split
    for i in range(0, len(tokens), batch):
        t, y, m = (x[i:i + batch].to(device) for x in (tokens, tags, mask))
        p = model(t, m).argmax(-1)
        for row in range(len(t)):
            n = int(m[row].sum())
            gold.append([data.TAGS[j] for j in y[row, :n].tolist()])
            pred.append([data.TAGS[j] for j in p[row, :n].tolist()])
    model.train()
    return f1(gold, pred)


def run(args):
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    task = data.make_task(args.vocab, n_target_train=args.target_train, n_target_test=args.test_size,
                          seed=args.seed)
    model = Encoder(args.vocab, args.hidden, args.heads, args.ffn, args.layers,
                    rtn_layer=args.rtn_layer).to(device)
    rtn = RTN(args.hidden).to(device)
    trainer = MetaXLTrainer(model, rtn, args.method, lr=args.lr, rtn_lr=args.rtn_lr,
                            perturb=args.perturb, population=args.population, sigma=args.sigma,
                            temperature=args.temperature, common_random_numbers=not args.no_crn,
                            seed=args.seed)
    src = Sampler(task["source"], args.source_batch, args.seed, device)
    tgt = Sampler(task["target_train"], args.target_batch, args.seed + 1, device)
    times = []
    with PeakMemory(device) as mem:
        for it in tqdm(range(args.iterations), desc=args.method, disable=args.quiet, dynamic_ncols=True):
            s, t = next(src), next(tgt)
            dt, loss = timed(lambda: trainer.iteration(s, t), device)
            times.append(dt)
    precision, recall, score = evaluate(model, task["target_test"], device)
    return {"method": args.method, "perturb": args.perturb, "seed": args.seed, "iterations": args.iterations,
            "f1": score, "precision": precision, "recall": recall, "final_loss": loss,
            "median_iteration_s": median(times[1:]), "peak_memory_mib": mem.peak_bytes / 2**20,
            "device": str(device), "torch": torch.__version__}


def main(argv=None):
    args = parse_args(argv)
    return run_and_report(run, args, lambda r: (f"{r['method']}: target test F1 {100 * r['f1']:.2f} (P {100 * r['precision']:.1f}, "
                  f"R {100 * r['recall']:.1f}) after {args.iterations} iterations; "
                  f"{r['median_iteration_s']:.3f} s/iteration"))


if __name__ == "__main__":
    main()
