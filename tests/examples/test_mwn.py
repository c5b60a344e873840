"""The Meta-Weight-Net example: data handling, every method, and EvoGrad
against the paper's plain step on the real ResNet-32."""
import gzip
import os
import struct
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "mwn"))
for name in ("data", "methods", "train", "models", "model"):  # other examples use these names too
    sys.modules.pop(name, None)

import data  # noqa: E402
import evograd  # noqa: E402
import methods  # noqa: E402
import train  # noqa: E402
from evograd.baselines import reference_evograd_step, reference_noise  # noqa: E402
import models  # noqa: E402
from models import ResNet32, WeightingNet, count  # noqa: E402


def write_idx(path, array, magic_dtype=0x08, compress=True):
    header = struct.pack(">HBB", 0, magic_dtype, array.dim()) + struct.pack(">" + "I" * array.dim(), *array.shape)
    raw = header + array.to(torch.uint8).numpy().tobytes()
    (gzip.open if compress else open)(path, "wb").write(raw)


def test_idx_round_trip_and_rejections(tmp_path):
    a = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "ok.gz", a)
    assert torch.equal(data.read_idx(tmp_path / "ok.gz"), a)
    write_idx(tmp_path / "plain", a, compress=False)
    assert torch.equal(data.read_idx(tmp_path / "plain"), a)
    with pytest.raises(FileNotFoundError, match="not found"):
        data.read_idx(tmp_path / "missing.gz")
    write_idx(tmp_path / "float.gz", a, magic_dtype=0x0D)
    with pytest.raises(ValueError, match="not a uint8 IDX"):
        data.read_idx(tmp_path / "float.gz")
    raw = gzip.open(tmp_path / "ok.gz").read()
    gzip.open(tmp_path / "short.gz", "wb").write(raw[:-5])
    with pytest.raises(ValueError, match="expected 24 data bytes"):
        data.read_idx(tmp_path / "short.gz")
    (tmp_path / "garbage.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(ValueError, match="unreadable"):
        data.read_idx(tmp_path / "garbage.gz")
    (tmp_path / "tiny").write_bytes(b"\x00")
    with pytest.raises(ValueError, match="too short"):
        data.read_idx(tmp_path / "tiny")


def test_fashion_mnist_loads_from_the_debian_package():
    x, y = data.load_split("t10k")
    assert x.shape == (10000, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (10000,) and torch.equal(torch.bincount(y), torch.full((10,), 1000))


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.8])
def test_uniform_noise_has_the_exact_rate_and_is_reproducible(rate):
    labels = torch.arange(1000) % 10
    noisy, mask = data.uniform_noise(labels, rate, seed=3)
    assert mask.sum().item() == round(rate * 1000)
    assert torch.equal(noisy != labels, mask)  # every chosen label really changes
    assert noisy.min() >= 0 and noisy.max() <= 9
    again, _ = data.uniform_noise(labels, rate, seed=3)
    assert torch.equal(noisy, again)
    if rate > 0:
        other, _ = data.uniform_noise(labels, rate, seed=4)
        assert not torch.equal(noisy, other)
        # The new label is uniform over the 9 other classes: 5-sigma bound on each.
        counts = torch.bincount((noisy[mask] - labels[mask]) % 10, minlength=10)[1:].double()
        n, p = mask.sum().item(), 1 / 9
        assert ((counts - n * p).abs() <= 5 * (n * p * (1 - p)) ** 0.5 + 1).all()
    with pytest.raises(ValueError, match="noise rate"):
        data.uniform_noise(labels, 1.5)


def test_corrupted_labels_are_spread_through_the_epoch():
    """The noise and the batch order use different random streams: the first
    batches of an epoch hold the noise rate, not only corrupted labels."""
    labels = torch.arange(5000) % 10
    noisy, mask = data.uniform_noise(labels, 0.4, seed=0)
    batches = data.Batches(torch.zeros(5000, 2, 2, dtype=torch.uint8), torch.arange(5000), 50, seed=0)
    first = torch.cat([next(batches)[1] for _ in range(20)])  # 1000 indices
    # Binomial(1000, 0.4) (slightly less spread without replacement): 5 sigma.
    assert abs(mask[first].float().mean().item() - 0.4) < 5 * (0.4 * 0.6 / 1000) ** 0.5


def test_meta_split_is_balanced_and_disjoint():
    labels = torch.arange(3000) % 10
    meta, rest = data.split_meta(labels, per_class=100, seed=0)
    assert torch.equal(torch.bincount(labels[meta]), torch.full((10,), 100))
    assert len(set(meta.tolist()) & set(rest.tolist())) == 0 and len(meta) + len(rest) == 3000


def test_model_sizes():
    assert count(WeightingNet(100)) == 301 and count(WeightingNet(10000)) == 30001
    assert 0.45e6 < count(ResNet32(width=1)) < 0.5e6
    assert 11e6 < count(ResNet32(width=5)) < 12e6


@pytest.mark.parametrize("method", methods.METHODS)
def test_each_method_trains(method):
    r = train.run(train.parse_args(["--method", method, "--iterations", "3", "--batch-size", "8",
                                    "--meta-batch-size", "8", "--train-size", "300", "--test-size", "40",
                                    "--quiet"]))
    assert 0.0 <= r["test_accuracy"] <= 1.0 and r["iterations"] == 3
    assert r["corrupted_fraction"] == pytest.approx(0.4, abs=1 / 300)
    assert r["final_train_loss"] == r["final_train_loss"]  # finite, not NaN


def functional_call(module, params, args):
    """torch.func's where it exists (torch 2), else torch 1.13's stateless one."""
    func = getattr(torch, "func", None)
    if func is not None and hasattr(func, "functional_call"):
        return func.functional_call(module, params, args)
    from torch.nn.utils import stateless
    return stateless.functional_call(module, params, args)


def test_meta_weights_normalised_by_their_sum():
    """'sum': sum_i c_i v_i / sum_j v_j, by hand in float64; 'mean': / n;
    the lookahead step on it gives T1-T2's hypergradient as on 'mean'."""
    torch.manual_seed(0)
    cost = torch.rand(6, 1, dtype=torch.float64) * 3
    v = torch.rand(6, 1, dtype=torch.float64)
    by_hand = sum(float(c) * float(w) for c, w in zip(cost, v)) / float(v.sum())
    assert float(methods.weigh(cost, v, "sum")) == pytest.approx(by_hand, rel=1e-15)
    assert float(methods.weigh(cost, v, "mean")) == pytest.approx(float((cost * v).sum()) / 6, rel=1e-15)
    zero = torch.zeros(6, 1, dtype=torch.float64)
    assert float(methods.weigh(cost, zero, "sum")) == 0.0  # all weights 0: no division
    model, vnet = torch.nn.Linear(5, 3).double(), WeightingNet(8).double()
    x, y = torch.randn(10, 5, dtype=torch.float64), torch.randint(3, (10,))
    xm, ym = torch.randn(10, 5, dtype=torch.float64), torch.randint(3, (10,))
    for normalise in ("mean", "sum"):
        params, hyper = list(model.parameters()), list(vnet.parameters())

        def train_loss(Q):
            logits = functional_call(model, dict(zip(["weight", "bias"], Q)), (x,))
            return methods.weighted_loss(logits, y, vnet, normalise)

        def val_loss(Q):
            logits = functional_call(model, dict(zip(["weight", "bias"], Q)), (xm,))
            return torch.nn.functional.cross_entropy(logits, ym)
        from evograd.baselines import t1t2_step
        for h in hyper:
            h.grad = None
        t1t2_step(params, hyper, train_loss, val_loss, lr=0.1)
        want = torch.cat([h.grad.flatten() for h in hyper])
        for h in hyper:
            h.grad = None
        evograd.EvoGrad(model, vnet, estimator="lookahead", inner_lr=0.1).step(
            lambda: methods.weighted_loss(model(x), y, vnet, normalise),
            lambda: torch.nn.functional.cross_entropy(model(xm), ym))
        got = torch.cat([h.grad.flatten() for h in hyper])
        assert float(got @ want / (got.norm() * want.norm())) > 0.9999, normalise


def test_vnet_optimiser_choice():
    model, vnet = torch.nn.Linear(5, 3), WeightingNet(8)
    sgd = methods.MWNTrainer(model, vnet, "t1t2", vnet_optimizer="sgd", vnet_weight_decay=5e-4)
    group = sgd.vopt.param_groups[0]
    assert isinstance(sgd.vopt, torch.optim.SGD) and group["nesterov"] and group["momentum"] == 0.9
    assert group["weight_decay"] == 5e-4 and group["lr"] == 1e-3
    assert isinstance(methods.MWNTrainer(model, vnet, "t1t2").vopt, torch.optim.Adam)
    with pytest.raises(ValueError, match="vnet_optimizer"):
        methods.MWNTrainer(model, vnet, "t1t2", vnet_optimizer="rmsprop")
    with pytest.raises(ValueError, match="meta_weights"):
        methods.MWNTrainer(model, vnet, "t1t2", meta_weights="max")


def test_evograd_equals_paper_step_on_resnet32():
    """Same noise: the plugin's step and the paper's stacked-copies step give
    the same weighting-net gradient (float64, so the paper step's cancellation
    in <g, theta_k> costs only ~3 of 16 digits)."""
    torch.manual_seed(0)
    model = ResNet32(width=1).double()
    vnet = WeightingNet(100).double()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)
    xm, ym = torch.randn(8, 1, 28, 28, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g)
    trainer = methods.MWNTrainer(model, vnet, "evograd-reference")
    K, sigma, tau, seed = 2, 1e-3, 0.05, 77

    meta = evograd.EvoGrad(model, vnet, population=K, sigma=sigma, temperature=tau, seed=seed)
    meta.step(lambda: methods.weighted_loss(model(x), y, vnet),
              lambda: torch.nn.functional.cross_entropy(model(xm), ym))
    ours = [p.grad.clone() for p in vnet.parameters()]
    vnet.zero_grad(set_to_none=True)

    params = list(model.parameters())
    reference_evograd_step(params, list(vnet.parameters()),
                           lambda Q: methods.weighted_loss(trainer._functional(Q, x), y, vnet),
                           lambda Q: torch.nn.functional.cross_entropy(trainer._functional(Q, xm), ym),
                           K, sigma, tau, noise=reference_noise(params, evograd.step_seed(seed, 0), K, sigma))
    for a, p in zip(ours, vnet.parameters()):
        assert torch.allclose(a, p.grad, rtol=0, atol=1e-9 * p.grad.abs().max())


@pytest.mark.parametrize("method", ["jvp", "lookahead"])
def test_one_training_pass_equals_two_when_v_stands_still(method):
    """one_step updates the classifier on the gradient the meta-step's inner
    pass computed, with V from before its update. With V's learning rate 0
    (V never moves) that is the two-pass loop's update: the same
    classifier after a few iterations, and the same weights logged."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 784), torch.randint(0, 10, (16,))
    xm, ym = torch.randn(16, 784), torch.randint(0, 10, (16,))
    runs = []
    for one_step in (False, True):
        torch.manual_seed(1)
        model, vnet = models.classifier("mlp"), WeightingNet(20)
        trainer = methods.MWNTrainer(model, vnet, method, vnet_lr=0.0, vnet_weight_decay=0.0,
                                     meta_weights="sum", one_step=one_step)
        losses = [trainer.iteration(x, y, xm, ym)[0] for _ in range(3)]
        runs.append((list(model.parameters()), losses, trainer.last["v"]))
    (pa, la, va), (pb, lb, vb) = runs
    for a, b in zip(pa, pb):
        assert torch.allclose(a, b, rtol=0, atol=1e-6)
    assert la == pytest.approx(lb, rel=1e-6) and torch.allclose(va, vb, rtol=0, atol=1e-7)
    torch.manual_seed(1)
    start = list(models.classifier("mlp").parameters())
    assert not torch.equal(pa[0], start[0])  # the classifier did move


def test_one_step_is_refused_where_it_would_change_the_update():
    model, vnet = models.classifier("mlp"), WeightingNet(20)
    with pytest.raises(ValueError, match="meta_weights='sum'"):
        methods.MWNTrainer(model, vnet, "jvp", one_step=True)
    with pytest.raises(ValueError, match="needs the inner gradient of a T1-T2 estimator"):
        methods.MWNTrainer(model, vnet, "t1t2", meta_weights="sum", one_step=True)
