"""Meta-Weight-Net in the noisy regime: the weighting net, meta-learned by
T1-T2 or by EvoGrad, must give the examples whose labels were corrupted less
of each classifier update than their share of the data; and the table runner
works end to end (--quick)."""
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
from models import WeightingNet, classifier  # noqa: E402

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


def corrupted_shares(method, seed=0):
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
                         vnet_weight_decay=args.vnet_weight_decay, seed=seed, scale=args.scale)
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


@pytest.mark.parametrize("method", ["t1t2", "evograd"])
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


def test_noisy_regime_quick(tmp_path, one_thread):
    """Pilot (baseline only, the rule picks a setting) and table (three methods)
    end to end on a few hundred images; the results and plots are written."""
    summary = noisy_regime.main(["pilot", "--quick", "--out", str(tmp_path)])
    assert summary["rule"] == noisy_regime.RULE and summary["chosen"]["train_size"] in (200, 400)
    pilot = json.loads((tmp_path / "pilot.json").read_text())
    assert {r["method"] for r in pilot["runs"]} == {"baseline"} and len(pilot["runs"]) == 6
    noisy_regime.main(["table", "--quick", "--out", str(tmp_path)])
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert len(runs) == 6  # 3 methods x 2 seeds
    for path in runs:
        r = json.loads(path.read_text())
        assert r["curve"][-1]["iteration"] == r["iterations"] and len(r["curve"]) == 2  # once an epoch
        assert (r["weighting_function"] is None) == (r["method"] == "baseline")
    table = (tmp_path / "table.md").read_text()
    for label in noisy_regime.LABELS.values():
        assert f"| {label} |" in table
    for name in ("pilot.png", "curves.png", "weighting.png", "pilot.md"):
        assert (tmp_path / name).stat().st_size > 0
