"""The LFT example: FT layers and their parameter counts, every method, and
EvoGrad against the paper's plain step with the FT noise held fixed."""
import os
import sys

import pytest
import torch

HERE = os.path.dirname(__file__)
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "examples", "lft"))
for name in ("data", "methods", "train", "models"):  # other examples use these names too
    sys.modules.pop(name, None)

import data  # noqa: E402
import evograd  # noqa: E402
import methods  # noqa: E402
import train  # noqa: E402
from evograd.baselines import reference_evograd_step, reference_noise  # noqa: E402
from models import FeatureWiseTransformation, RelationNet  # noqa: E402


@pytest.mark.parametrize("depth,count", [(10, 3712), (34, 9344)])
def test_ft_hyperparameter_counts(depth, count):
    assert sum(p.numel() for p in RelationNet(depth).ft_parameters()) == count


def test_ft_layer_is_identity_unless_training_and_active():
    ft = FeatureWiseTransformation(4)
    x = torch.randn(2, 4, 3, 3)
    ft.eval()
    assert torch.equal(ft(x), x)
    ft.train()
    ft.active = False
    assert torch.equal(ft(x), x)
    ft.active = True
    torch.manual_seed(0)
    y = torch.stack([ft(torch.ones(1, 4, 1, 1)).flatten() for _ in range(4000)])
    # gamma * 1 + beta with E = 1 and Var = softplus(0.3)^2 + softplus(0.5)^2.
    var = torch.nn.functional.softplus(torch.tensor(0.3)) ** 2 + torch.nn.functional.softplus(torch.tensor(0.5)) ** 2
    assert (y.mean(0) - 1).abs().max() < 5 * (var / 4000).sqrt()
    assert ((y.var(0) / var) - 1).abs().max() < 0.15  # 5 sigma for n = 4000: sqrt(2/n) * 5


def test_domains_and_episodes():
    dom = data.load_domain("digits", size=16, max_per_class=30)
    assert len(dom) == 10 and dom[0].shape[1:] == (3, 16, 16)
    s, q, y = data.episode(dom, 5, 2, 3, torch.Generator().manual_seed(0))
    assert s.shape == (10, 3, 16, 16) and q.shape == (15, 3, 16, 16) and y.tolist() == sum([[i] * 3 for i in range(5)], [])
    with pytest.raises(ValueError, match="unknown domain"):
        data.load_domain("imagenet")


@pytest.mark.parametrize("method", methods.METHODS)
def test_each_method_runs(method):
    r = train.run(train.parse_args(["--method", method, "--iterations", "2", "--n-query", "2", "--k-shot", "1",
                                    "--size", "32", "--test-episodes", "3", "--quiet"]))
    assert 0.0 <= r["accuracy"] <= 1.0 and r["final_loss"] == r["final_loss"]
    assert set(r["by_shots"]) == {"1-shot"}  # trained 1-shot: evaluated 1-shot


def test_evograd_perturbs_model_not_ft_and_matches_paper_step():
    torch.manual_seed(0)
    model = RelationNet(10).double()
    trainer = methods.LFTTrainer(model, "evograd", n_way=3, lr=1e-3)
    ft_ids = {id(p) for p in model.ft_parameters()}
    assert not any(id(p) in ft_ids for p in trainer.meta.params)
    g = torch.Generator().manual_seed(1)
    ep = lambda: (torch.randn(3, 3, 32, 32, generator=g, dtype=torch.float64),
                  torch.randn(6, 3, 32, 32, generator=g, dtype=torch.float64), torch.tensor([0, 0, 1, 1, 2, 2]))
    seen, unseen = ep(), ep()
    K, sigma, tau, seed = 2, 1e-3, 0.05, 3
    meta = evograd.EvoGrad(model.model_parameters(), model.ft_parameters(), population=K, sigma=sigma,
                           temperature=tau, seed=seed, common_random_numbers=True,
                           buffers=list(model.buffers()))
    state = torch.get_rng_state()  # what EvoGrad replays for every candidate
    ft_before = [p.detach().clone() for p in model.ft_parameters()]
    state_before = {k: v.clone() for k, v in model.state_dict().items()}
    meta.step(lambda: trainer.seen_loss(seen), lambda: trainer.unseen_loss(unseen))
    ours = [p.grad.clone() for p in model.ft_parameters()]
    assert all(torch.equal(a, b) for a, b in zip(ft_before, model.ft_parameters()))
    # Parameters and BatchNorm statistics (moved by the candidates' training-mode
    # forwards) are back to their exact values.
    assert all(torch.equal(v, state_before[k]) for k, v in model.state_dict().items())
    for p in model.ft_parameters():
        p.grad = None

    params = model.model_parameters()
    ids = {id(p) for p in params}
    names = [n for n, p in model.named_parameters() if id(p) in ids]

    def fwd(Q):
        st = {"model." + n: p for n, p in zip(names, Q)}
        st.update({"model." + n: b.clone() for n, b in model.named_buffers()})
        return lambda s, q, y: methods.functional_call(trainer.episode_loss, st, (s, q, y))

    def seen_fn(Q):
        torch.set_rng_state(state)  # the same FT draws as EvoGrad's candidates
        return trainer.seen_loss(seen, fwd(Q))

    reference_evograd_step(params, model.ft_parameters(), seen_fn, lambda Q: trainer.unseen_loss(unseen, fwd(Q)),
                           K, sigma, tau, noise=reference_noise(params, evograd.step_seed(seed, 0), K, sigma))
    for a, p in zip(ours, model.ft_parameters()):
        assert torch.allclose(a, p.grad, rtol=0, atol=1e-9 * p.grad.abs().max())
