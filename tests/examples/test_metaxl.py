"""The MetaXL example: F1 scorer, RTN size, data, every method, and EvoGrad
against the paper's plain step for head-only and all-parameter perturbation."""
import os
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "metaxl"))
for name in ("data", "methods", "train", "models", "model"):  # other examples use these names too
    sys.modules.pop(name, None)

import data  # noqa: E402
import evograd  # noqa: E402
import methods  # noqa: E402
import train  # noqa: E402
from evograd.baselines import reference_evograd_step, reference_noise  # noqa: E402
from f1 import f1, spans  # noqa: E402
from model import RTN, Encoder, rtn_parameter_count  # noqa: E402


def test_f1_hand_worked_examples():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG", "I-ORG"]]
    assert f1(gold, gold) == (1.0, 1.0, 1.0)
    # One exact match (LOC), one boundary error (PER cut short), ORG missed,
    # one spurious MISC: P = 1/3, R = 1/3.
    pred = [["B-PER", "O", "O", "B-LOC"], ["B-MISC", "O", "O", "O"]]
    p, r, s = f1(gold, pred)
    assert (p, r) == pytest.approx((1 / 3, 1 / 3)) and s == pytest.approx(1 / 3)
    # An I- tag that does not continue its type starts a new entity.
    assert spans(["I-LOC", "I-LOC", "I-PER", "B-PER"]) == {(0, 0, 2, "LOC"), (0, 2, 3, "PER"), (0, 3, 4, "PER")}
    assert f1([["O"]], [["O"]]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="gold tags"):
        f1([["O", "O"]], [["O"]])


def test_rtn_parameter_count_formula():
    for d in (8, 64, 768):
        assert sum(p.numel() for p in RTN(d).parameters()) == rtn_parameter_count(d)
    assert 585_000 < rtn_parameter_count(768) < 595_000


def test_generated_task_is_deterministic_and_shifted():
    a, b = data.make_task(500, n_source=50, n_target_train=20, n_target_dev=5, n_target_test=5, seed=3), \
        data.make_task(500, n_source=50, n_target_train=20, n_target_dev=5, n_target_test=5, seed=3)
    for k in a:
        for x, y in zip(a[k], b[k]):
            assert torch.equal(x, y)
    src, tgt = data.make_languages(500, seed=3)
    renamed = src.ids != tgt.ids  # half the fillers and triggers, 30% of the names
    assert 0.3 < renamed.float().mean() < 0.6
    assert not set(tgt.ids[renamed].tolist()) & set(src.ids.tolist())  # new surface forms
    assert len(set(tgt.ids.tolist())) == len(tgt.ids)
    tokens, tags, mask = a["source"]
    assert tags[mask].max() < len(data.TAGS) and (tags[mask] > 0).any()
    assert (tokens[~mask] == data.PAD).all()


@pytest.mark.parametrize("method", methods.METHODS)
def test_each_method_runs_one_iteration(method):
    r = train.run(train.parse_args(["--method", method, "--iterations", "2", "--vocab", "300",
                                    "--hidden", "16", "--ffn", "32", "--heads", "2",
                                    "--test-size", "20", "--target-train", "20", "--quiet"]))
    assert 0.0 <= r["f1"] <= 1.0 and r["final_loss"] == r["final_loss"]


def tiny_setup(dropout):
    torch.manual_seed(0)
    model = Encoder(300, 16, 2, 32, 2, dropout=dropout, rtn_layer=1).double()
    rtn = RTN(16).double()
    task = data.make_task(300, n_source=12, n_target_train=8, n_target_dev=2, n_target_test=2, seed=1, max_len=12)
    src = task["source"]
    tgt = task["target_train"]
    return model, rtn, src, tuple(t[:4] for t in tgt), tuple(t[4:] for t in tgt)


@pytest.mark.parametrize("perturb", ["head", "all"])
def test_evograd_equals_paper_step_with_same_noise(perturb):
    model, rtn, src, tgt_a, tgt_b = tiny_setup(dropout=0.0)
    model.train()
    trainer = methods.MetaXLTrainer(model, rtn, "evograd", perturb=perturb)
    K, sigma, tau, seed = 3, 1e-3, 0.05, 5
    params = list(model.classifier.parameters()) if perturb == "head" else list(model.parameters())
    meta = evograd.EvoGrad(params, rtn, population=K, sigma=sigma, temperature=tau, seed=seed)
    val = lambda: methods.token_loss(model(tgt_b[0], tgt_b[2]), tgt_b[1], tgt_b[2])
    meta.step(lambda: trainer.train_loss(model, src, tgt_a), val)
    ours = [p.grad.clone() for p in rtn.parameters()]
    rtn.zero_grad(set_to_none=True)

    names = [n for n, p in model.named_parameters() if any(p is q for q in params)]
    fixed = {n: p for n, p in model.named_parameters() if not any(p is q for q in params)}

    def fwd(Q):
        return lambda *a: methods.functional_call(model, {**fixed, **dict(zip(names, Q))}, a)

    reference_evograd_step(params, list(rtn.parameters()),
                           lambda Q: trainer.train_loss(fwd(Q), src, tgt_a),
                           lambda Q: methods.token_loss(fwd(Q)(tgt_b[0], tgt_b[2]), tgt_b[1], tgt_b[2]),
                           K, sigma, tau, noise=reference_noise(params, evograd.step_seed(seed, 0), K, sigma))
    for a, p in zip(ours, rtn.parameters()):
        assert torch.allclose(a, p.grad, rtol=0, atol=1e-9 * p.grad.abs().max())


@pytest.mark.parametrize("crn", [True, False])
def test_dropout_with_and_without_common_random_numbers(crn):
    model, rtn, src, tgt_a, tgt_b = tiny_setup(dropout=0.3)
    trainer = methods.MetaXLTrainer(model, rtn, "evograd", perturb="all", common_random_numbers=crn)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        trainer.meta_update(src, tgt_a, tgt_b)
    assert all(torch.isfinite(p).all() for p in rtn.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # With CRN the candidates differ only by their noise: repeating a step from
    # the same RNG state reproduces the same hypergradient exactly.
    if crn:
        grads = []
        for _ in range(2):
            torch.manual_seed(42)
            rtn.zero_grad(set_to_none=True)
            meta = evograd.EvoGrad(list(model.parameters()), rtn, seed=1, common_random_numbers=True)
            meta.step(lambda: trainer.train_loss(model, src, tgt_a),
                      lambda: methods.token_loss(model(tgt_b[0], tgt_b[2]), tgt_b[1], tgt_b[2]))
            grads.append([p.grad.clone() for p in rtn.parameters()])
        assert all(torch.equal(a, b) for a, b in zip(*grads))
