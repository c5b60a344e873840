#!/usr/bin/env python3
"""Learning a rotation angle (EvoGrad paper, section 4.2) on Fashion-MNIST.

Training images are upright; the validation and test images are rotated by
a true angle. The hyperparameter lambda (one scalar, degrees, starting at
0) rotates each training batch before LeNet sees it, differentiably
(affine grid + bilinear sampling). Every model update (SGD on a training
batch rotated by the current lambda) is followed by one meta-update of
lambda (Adam) from the hypergradient of a validation batch's loss, by
EvoGrad or by T1-T2. `baseline` keeps lambda at 0, `oracle` at the true
angle. Reports the learned angle and the accuracy on the rotated test set.

    .venv/bin/python examples/rotation/train.py --method evograd --angle 30
"""
import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import data  # noqa: E402
from common.grid import run_and_report  # noqa: E402
from common.measure import median, timed  # noqa: E402
from methods import LEARNED, METHODS, RotationTrainer  # noqa: E402
from models import FLAVOURS, LeNet, count  # noqa: E402

# --quick: the settings the tests use (a few seconds per run on one thread).
QUICK = dict(train_size=3000, val_size=1000, test_size=2000, iterations=150)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=METHODS, default="evograd")
    p.add_argument("--angle", type=float, default=30.0, help="true rotation of validation and test images (degrees)")
    p.add_argument("--init-angle", type=float, default=0.0, help="lambda's starting value (degrees) for evograd/t1t2")
    p.add_argument("--iterations", type=int, default=800, help="model updates (each followed by one meta-update)")
    p.add_argument("--epochs", type=float, default=None,
                   help="instead of --iterations: passes over the training subset")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--val-batch-size", type=int, default=64)
    p.add_argument("--train-size", type=int, default=12000, help="upright training images (a subset of the 60k)")
    p.add_argument("--val-size", type=int, default=3000, help="held-out training images, rotated, for the meta-updates")
    p.add_argument("--test-size", type=int, default=10000, help="rotated test images to evaluate on")
    p.add_argument("--model", choices=FLAVOURS, default="classic",
                   help="LeNet-5 flavour: classic (tanh, average pooling) or relu (ReLU, max pooling)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd", help="the model's optimiser")
    p.add_argument("--lr", type=float, default=0.05, help="model lr (also T1-T2's inner lr)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    p.add_argument("--meta-lr", type=float, default=1.0, help="Adam lr on lambda (degrees per step, roughly)")
    p.add_argument("--meta-schedule", choices=["cosine", "constant"], default="cosine",
                   help="lambda's lr over the run: cosine decay to 0, or constant")
    p.add_argument("--meta-eps", type=float, default=1e-8, help="Adam eps on lambda")
    p.add_argument("--population", type=int, default=2, help="EvoGrad K")
    p.add_argument("--sigma", type=float, default=1e-3, help="EvoGrad noise scale")
    p.add_argument("--temperature", type=float, default=0.05, help="EvoGrad softmax temperature tau")
    p.add_argument("--noise", choices=["sign", "gauss"], default="sign", help="EvoGrad noise")
    p.add_argument("--antithetic", action="store_true", help="EvoGrad antithetic pairs (even K)")
    p.add_argument("--scale", choices=["none", "t1t2"], default="none",
                   help="EvoGrad hypergradient scale: its own (the paper's) or T1-T2's")
    p.add_argument("--quick", action="store_true",
                   help="small run for tests: " + ", ".join(f"{k}={v}" for k, v in QUICK.items()))
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=str(data.DEFAULT_ROOT))
    p.add_argument("--json", type=Path, default=None, help="write the result here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    if args.epochs is not None:
        args.iterations = max(1, round(args.epochs * args.train_size / args.batch_size))
    return args


@torch.no_grad()
def accuracy(model, x, y, batch=1000):
    model.eval()
    correct = sum((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
                  for i in range(0, len(y), batch))
    model.train()
    return correct / len(y)


def run(args, make_trainer=RotationTrainer):
    """One run; `make_trainer` (RotationTrainer's signature) lets a caller
    swap the meta-update (sensitivity.py's temperature rule)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ds = data.prepare(args.angle, args.train_size, args.val_size, args.test_size, args.seed, args.data_dir)
    model = LeNet(flavour=args.model)
    trainer = make_trainer(model, args.method, args.angle, lr=args.lr, momentum=args.momentum,
                           optimizer=args.optimizer, meta_lr=args.meta_lr, meta_eps=args.meta_eps,
                           meta_schedule=args.meta_schedule, iterations=args.iterations,
                           init_angle=args.init_angle, population=args.population,
                           sigma=args.sigma, temperature=args.temperature, noise=args.noise,
                           antithetic=args.antithetic, scale=args.scale, seed=args.seed)
    batches = data.Batches(*ds["train"], args.batch_size, args.seed)
    val_batches = data.Batches(*ds["val"], args.val_batch_size, args.seed + 1)
    times = []
    bar = tqdm(range(args.iterations), desc=f"{args.method} {args.angle:+g}° seed {args.seed}",
               disable=args.quiet, dynamic_ncols=True, leave=False)
    for it in bar:
        (x, y), (xv, yv) = next(batches), next(val_batches)
        dt, loss = timed(lambda: trainer.iteration(x, y, xv, yv), "cpu")
        times.append(dt)
        if it % 20 == 0:
            bar.set_postfix(loss=f"{loss:.3f}", angle=f"{trainer.log['angle'][-1]:+.1f}")
    log = trainer.log
    tail = log["angle"][-max(1, args.iterations // 10):]
    learned = args.method in LEARNED
    settings = {k: v for k, v in vars(args).items() if k not in ("json", "quiet", "data_dir", "method", "seed", "angle")}
    return {
        "method": args.method, "true_angle": args.angle, "seed": args.seed,
        "final_angle": log["angle"][-1], "tail_mean_angle": statistics.mean(tail),
        "test_accuracy": accuracy(model, *ds["test"]), "test_size": len(ds["test"][1]),
        "median_iteration_s": median(times[1:]), "mean_iteration_s": statistics.mean(times[1:] or times),
        "final_train_loss": statistics.mean(log["train_loss"][-20:]),
        "final_val_loss": statistics.mean(log["val_loss"][-20:]) if learned else None,
        "mean_weight_entropy": statistics.mean(log["entropy"]) if log["entropy"] else None,
        "median_loss_spread": median(log["loss_spread"]) if log["loss_spread"] else None,
        "median_grad_l1": median(log["grad_l1"]), "median_grad_l2": median(log["grad_l2"]),
        "median_abs_hypergradient": median([abs(h) for h in log["hypergradient"]]) if learned else None,
        "angle_trajectory": log["angle"], "entropy_trajectory": log["entropy"],
        "model_parameters": count(model), "settings": settings, "torch": torch.__version__,
    }


def main(argv=None):
    args = parse_args(argv)
    return run_and_report(run, args, lambda r: (
        f"{r['method']}: lambda {r['final_angle']:+.2f}° (true {r['true_angle']:+g}°), "
        f"rotated-test accuracy {100 * r['test_accuracy']:.2f}% after {args.iterations} iterations; "
        f"{1000 * r['median_iteration_s']:.1f} ms/iteration"))


if __name__ == "__main__":
    main()
