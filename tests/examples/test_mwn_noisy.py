"""Meta-Weight-Net in the noisy regime.

- T1-T2, trained end to end: the weighting net gives the examples whose labels
  were corrupted less of each classifier update than their share of the data.
- EvoGrad, one meta-step at a time: on average its hypergradient moves weight
  from corrupted to clean examples, by as much as T1-T2's does. (Trained end
  to end as the example runs it, EvoGrad's weighting net does not find the
  corrupted examples here: results/mwn_noisy/table.md and its notes.)
- The table runner works end to end (--quick).

Both property tests fail when the weighting net's gradient is zeroed or
sign-flipped after the meta-step."""
import json
import math
import os
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "mwn"))
for name in ("data", "methods", "train", "models", "model", "noisy_regime"):  # other examples use these names too
    sys.modules.pop(name, None)

import data  # noqa: E402
import noisy_regime  # noqa: E402
import train  # noqa: E402
from methods import MWNTrainer  # noqa: E402
from models import MLP, WeightingNet, classifier  # noqa: E402
from torch.nn import functional as F  # noqa: E402

RATE = 0.4
TRAIN_SIZE = 2000
BATCH = 100
ITERATIONS = 600          # 30 epochs of the 2000 images
MEASURED = 200            # the last 10 epochs: whole epochs, so each example is seen equally often
Z = 5.0                   # standard errors


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def corrupted_shares(method, seed=0, population=2):
    """Trains the MLP with MWN on TRAIN_SIZE images at RATE noise; returns, for
    each of the last MEASURED iterations, the share of that update's normalised
    weight that went to corrupted examples, and the mean V on corrupted and on
    clean examples over those iterations."""
    args = train.parse_args(["--method", method, "--model", "mlp", "--noise-rate", str(RATE),
                             "--train-size", str(TRAIN_SIZE), "--test-size", "1", "--seed", str(seed),
                             "--batch-size", str(BATCH), "--meta-batch-size", str(BATCH)])
    torch.manual_seed(seed)
    ds = train.prepare(args)
    model, vnet = classifier("mlp"), WeightingNet(args.vnet_hidden)
    trainer = MWNTrainer(model, vnet, method, lr=args.lr, vnet_lr=args.vnet_lr,
                         vnet_weight_decay=args.vnet_weight_decay, seed=seed, scale=args.scale,
                         population=population)
    batches = data.Batches(*ds["train"], BATCH, seed)
    meta_batches = data.Batches(*ds["meta"], BATCH, seed + 1)
    shares, v = [], {"clean": [], "corrupted": []}
    for it in range(ITERATIONS):
        (x, y), (xm, ym) = next(batches), next(meta_batches)
        trainer.iteration(x, y, xm, ym)
        if it >= ITERATIONS - MEASURED:
            c, w = ds["mask"][batches.last], trainer.last["v"]
            shares.append((w[c].sum() / w.sum()).item())
            v["clean"].append(w[~c].mean().item())
            v["corrupted"].append(w[c].mean().item())
    return shares, {k: sum(x) / len(x) for k, x in v.items()}


@pytest.mark.parametrize("method", ["t1t2", "lookahead"])
def test_weighting_net_finds_the_corrupted_examples(method, one_thread):
    """Uniform weights give corrupted examples a share of each update equal to
    their share of the batch: over whole epochs exactly RATE on average, since
    every example comes once an epoch and exactly RATE of them are corrupted.
    A weighting net that has not learned which examples are wrong (a zero or
    sign-flipped hypergradient) stays at or above RATE. The margin is not
    tuned: Z standard errors of the mean share, the standard error estimated
    from the batch-to-batch spread of the shares (batches are disjoint draws),
    never below the spread that drawing the batch alone gives,
    sqrt(RATE (1 - RATE) / BATCH) per batch."""
    shares, v = corrupted_shares(method)
    n = len(shares)
    mean = sum(shares) / n
    sd = math.sqrt(sum((s - mean) ** 2 for s in shares) / (n - 1))
    se = max(sd, math.sqrt(RATE * (1 - RATE) / BATCH)) / math.sqrt(n)
    assert RATE - mean > Z * se, (f"{method}: corrupted examples got {mean:.3f} of the updates' weight "
                                  f"(uniform: {RATE}); needed below {RATE - Z * se:.3f}; mean V "
                                  f"corrupted {v['corrupted']:.3f}, clean {v['clean']:.3f}")
    assert v["corrupted"] < v["clean"]


def gap_changes(draws_per_batch, batches=4, warmup=200, population=16, hidden=32, seed=0):
    """After `warmup` plain SGD iterations on the noisy labels (V at its
    initialisation), for each of `batches` pairs of training and meta batch:
    the gradient of the weight gap G = mean V(corrupted) - mean V(clean) on
    that batch, and, for T1-T2 once and for EvoGrad `draws_per_batch` times,
    -dG . g: how much a plain descent step along the meta-step's gradient g
    changes the gap, per unit step (negative: corrupted examples lose weight).
    The gradients are read after MWNTrainer.meta_update, as the optimiser
    would see them (its learning rate is 0 here, so V does not move)."""
    args = train.parse_args(["--model", "mlp", "--noise-rate", str(RATE), "--train-size", str(TRAIN_SIZE),
                             "--test-size", "1", "--seed", str(seed)])
    torch.manual_seed(seed)
    ds = train.prepare(args)
    model, vnet = MLP(hidden=hidden), WeightingNet(args.vnet_hidden)
    plain = MWNTrainer(model, vnet, "baseline", lr=args.lr)
    train_batches = data.Batches(*ds["train"], BATCH, seed)
    meta_batches = data.Batches(*ds["meta"], BATCH, seed + 1)
    for _ in range(warmup):
        plain.iteration(*next(train_batches), *next(meta_batches))
    t1t2 = MWNTrainer(model, vnet, "t1t2", lr=args.lr, vnet_lr=0.0)
    evo = MWNTrainer(model, vnet, "evograd", lr=args.lr, vnet_lr=0.0, population=population, seed=seed,
                     scale="t1t2")

    def grad():
        return torch.cat([p.grad.flatten() for p in vnet.parameters()]).double()

    reference, draws = [], []
    for _ in range(batches):
        (x, y), (xm, ym) = next(train_batches), next(meta_batches)
        corrupted = ds["mask"][train_batches.last]
        with torch.no_grad():
            cost = F.cross_entropy(model(x), y, reduction="none").reshape(-1, 1)
        vnet.zero_grad()
        v = vnet(cost).flatten()
        (v[corrupted].mean() - v[~corrupted].mean()).backward()
        dgap = grad()
        t1t2.meta_update(x, y, xm, ym)
        reference.append(-(dgap @ grad()).item())
        for _ in range(draws_per_batch):
            evo.meta_update(x, y, xm, ym)
            draws.append(-(dgap @ grad()).item())
    return sum(reference) / batches, draws


def test_evograd_meta_step_moves_weight_off_the_corrupted_examples(one_thread):
    """EvoGrad's hypergradient is a random estimate whose expectation (with
    scale='t1t2', for small sigma) is T1-T2's. One step of it is too noisy to
    see this in (the spread of -dG.g over draws is ~6x its mean at K=2 on
    this MLP, ~19x on the 670k-parameter one), so the test averages many
    draws: a 26k-parameter MLP keeps each draw cheap and K=16 candidates cut
    the spread. The margins are the draws' own standard
    error, Z of them: the mean gap change must be below zero by Z SE (the
    step takes weight off corrupted examples), and within Z SE of T1-T2's."""
    reference, draws = gap_changes(draws_per_batch=250)
    n = len(draws)
    mean = sum(draws) / n
    se = math.sqrt(sum((d - mean) ** 2 for d in draws) / (n - 1) / n)
    assert reference < 0  # T1-T2's step, the expectation, moves weight off corrupted examples
    assert mean < -Z * se, f"EvoGrad's mean gap change {mean:.4f} (SE {se:.4f}); T1-T2's {reference:.4f}"
    assert abs(mean - reference) < Z * se, f"EvoGrad {mean:.4f} ± {se:.4f} vs T1-T2 {reference:.4f}"


def test_noisy_regime_quick(tmp_path, one_thread):
    """Pilot (baseline only, the rule picks a setting) and table (every method)
    end to end on a few hundred images; the results and plots are written."""
    summary = noisy_regime.main(["pilot", "--quick", "--out", str(tmp_path)])
    assert summary["rule"] == noisy_regime.RULE and summary["chosen"]["train_size"] in (200, 400)
    pilot = json.loads((tmp_path / "pilot.json").read_text())
    assert {r["method"] for r in pilot["runs"]} == {"baseline"} and len(pilot["runs"]) == 6
    every = ["--vnet-config", "paper", "--methods", *noisy_regime.METHODS]  # jvp-onestep needs paper's
    noisy_regime.main(["table", "--quick", "--out", str(tmp_path), *every])
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert len(runs) == 2 * len(noisy_regime.METHODS)  # methods x 2 seeds
    for path in runs:
        r = json.loads(path.read_text())
        assert r["curve"][-1]["iteration"] == r["iterations"] and len(r["curve"]) == 2  # once an epoch
        assert (r["weighting_function"] is None) == (r["method"] == "baseline")
        assert r["one_step"] == ("jvp-onestep" in path.name)
    table = (tmp_path / "table.md").read_text()
    for label in noisy_regime.LABELS.values():
        assert f"| {label} |" in table
    for name in ("pilot.png", "curves.png", "weighting.png", "pilot.md"):
        assert (tmp_path / name).stat().st_size > 0
    timing = noisy_regime.main(["timing", "--quick", "--out", str(tmp_path), *every])
    assert set(timing["methods"]) == set(noisy_regime.METHODS)
    assert all(v["median_s"] > 0 for v in timing["methods"].values())
