"""estimator="jvp" against T1-T2 by double backward, with the closures as
the official code writes them (``.detach()``, ``.data``), on networks with
the official models' structure: ReLU, max-pool, BatchNorm, dropout, FT
layers inside the network, a weighting net on detached costs, an RTN on a
detached hidden state with LayerNorm and attention.

The reference (``t1t2``) is T1-T2 as the official step computes it: the
training loss's gradient with create_graph, the validation gradient at
theta' = theta - alpha g, and one more backward to lambda; in float64, with
the training pass's randomness replayed as the step replays it."""
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import evograd

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))
from lft.models import RelationNet  # noqa: E402
from metaxl.model import Encoder  # noqa: E402
from mwn.models import ResNet32  # noqa: E402

ALPHA = 0.1


def math_attention():
    """T1-T2's double backward needs attention's math kernel: torch's fused
    CPU kernels have no derivative of their backward."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # torch < 2.3 picks math itself where it must
        import contextlib
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def t1t2(model, params, hyper, train, val, alpha=ALPHA):
    """lambda's T1-T2 gradient by double backward (params: the unrolled
    tensors of model); buffers put back before each pass, as the step does."""
    buffers = [b.detach().clone() for b in model.buffers()]

    def put_back_buffers():
        with torch.no_grad():
            for b, s in zip(model.buffers(), buffers):
                b.data.copy_(s)
    rng = torch.get_rng_state()
    with math_attention():
        return _t1t2(model, params, hyper, train, val, alpha, put_back_buffers, rng)


def _t1t2(model, params, hyper, train, val, alpha, put_back_buffers, rng):
    loss = train()
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    saved = [p.detach().clone() for p in params]
    with torch.no_grad():  # through .data: the graph above saved these tensors
        for p, g in zip(params, grads):
            p.data.sub_(alpha * g.detach())
    put_back_buffers()
    out = val()
    g_val = torch.autograd.grad(out, params, allow_unused=True)
    with torch.no_grad():
        for p, s in zip(params, saved):
            p.data.copy_(s)
    put_back_buffers()
    dot = sum((g * v).sum() for g, v in zip(grads, g_val) if v is not None)
    through = torch.autograd.grad(-alpha * dot, hyper, allow_unused=True)
    torch.set_rng_state(rng)
    return torch.cat([t.flatten() for t in through])


def jvp_step(model, hyper, train, val, **options):
    """The step as a user writes it: the model and lambda; every tensor of
    the model but lambda is unrolled, as in the reference."""
    for h in hyper:
        h.grad = None
    meta = evograd.EvoGrad(model, hyper, estimator="jvp", inner_lr=ALPHA, **options)
    meta.step(train, val)
    return torch.cat([h.grad.flatten() for h in hyper])


def cos(a, b):
    return float(a.double() @ b.double() / (a.double().norm() * b.double().norm()))


# --- the applications' structures, each in float64 and float32 -------------

def mwn(dtype, device="cpu"):
    """ResNet-32 (BatchNorm, ReLU) and MWN's weighting net on costs taken
    with ``.data``, as the official train loop feeds it. (Each structure is
    drawn on the CPU and moved: every device sees the same problem.)"""
    torch.manual_seed(0)
    model = ResNet32(num_classes=10, in_channels=3, blocks_per_stage=1).to(device, dtype).train()
    vnet = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, 1), nn.Sigmoid()).to(device, dtype)
    x, y = torch.randn(12, 3, 16, 16).to(device, dtype), torch.randint(10, (12,)).to(device)
    xv, yv = torch.randn(8, 3, 16, 16).to(device, dtype), torch.randint(10, (8,)).to(device)

    def train():
        cost = F.cross_entropy(model(x), y, reduction="none").reshape(-1, 1)
        return (cost * vnet(cost.data)).sum() / len(cost)
    return model, list(model.parameters()), list(vnet.parameters()), train, \
        lambda: F.cross_entropy(model(xv), yv)


def lft(dtype, device="cpu"):
    """RelationNet on a ResNet-10 with its 7x7 stem and max-pool, FT layers
    inside every block (lambda), one FT draw per step, pseudo-unseen episode
    with FT off."""
    torch.manual_seed(0)
    model = RelationNet(10).to(device, dtype).train()
    ft = model.ft_parameters()
    n_way, shot, query = 3, 1, 2
    def episode():
        return (torch.randn(n_way * shot, 3, 40, 40).to(device, dtype),
                torch.randn(n_way * query, 3, 40, 40).to(device, dtype),
                torch.arange(n_way).repeat_interleave(query).to(device))
    seen, unseen = episode(), episode()

    def train():
        model.set_ft(True)
        return model.loss(*seen, n_way)[0]

    def val():
        model.set_ft(False)
        return model.loss(*unseen, n_way)[0]
    return model, model.model_parameters(), ft, train, val


class MetaXLNet(nn.Module):
    def __init__(self, dtype, dropout):
        super().__init__()
        self.encoder = Encoder(vocab_size=50, d=16, heads=2, ffn=32, layers=2, num_tags=5,
                               max_len=8, dropout=dropout, rtn_layer=1).to(dtype)
        self.rtn = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 16)).to(dtype)

    def forward(self, tokens, mask, transfer):
        h = self.encoder.embed(tokens) + self.encoder.pos[: tokens.shape[1]]
        for i, layer in enumerate(self.encoder.layers):
            h = layer(h, src_key_padding_mask=~mask)
            if transfer and i == 0:  # the official step detaches the RTN input
                h = h + self.rtn(h.detach())
        return self.encoder.classifier(self.encoder.norm(h))


def metaxl(dtype, dropout=0.1, device="cpu"):
    """A transformer encoder (LayerNorm, GELU-free ReLU FFN, attention,
    dropout) with the RTN (lambda) on the detached hidden state after layer
    1 for the source language."""
    torch.manual_seed(0)
    net = MetaXLNet(dtype, dropout).to(device).train()
    tokens, mask = torch.randint(1, 50, (6, 8)), torch.ones(6, 8, dtype=torch.bool)
    mask[0, 6:] = False
    tags = torch.randint(5, (6, 8))
    tokens, mask, tags = tokens.to(device), mask.to(device), tags.to(device)

    def train():
        return F.cross_entropy(net(tokens[:4], mask[:4], True).flatten(0, 1), tags[:4].flatten())

    def val():
        return F.cross_entropy(net(tokens[4:], mask[4:], False).flatten(0, 1), tags[4:].flatten())
    return net, list(net.encoder.parameters()), list(net.rtn.parameters()), train, val


APPS = {"mwn": mwn, "lft": lft, "metaxl": metaxl}


@pytest.mark.parametrize("app", sorted(APPS))
def test_jvp_equals_t1t2_in_float64_with_the_official_detaches(app):
    """Exact: the same derivative by other means, to float64 rounding."""
    model, params, hyper, train, val = APPS[app](torch.float64)
    torch.manual_seed(5)
    want = t1t2(model, params, hyper, train, val)
    torch.manual_seed(5)
    got = jvp_step(model, hyper, train, val)
    assert want.norm() > 0
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9 * float(want.norm()))


@pytest.mark.parametrize("app", sorted(APPS))
def test_jvp_in_float32_matches_the_float64_t1t2(app):
    """As users train: float32 against the float64 reference on the same
    weights. Forward mode takes no difference, so the error is float32
    rounding (~1e-6 relative per operation), not a step's truncation.
    (Dropout masks drawn in float32 and float64 differ, so the encoder's
    dropout is off here; the float64 test above keeps it.)"""
    build = (lambda d: metaxl(d, dropout=0.0)) if app == "metaxl" else APPS[app]
    model64, params64, hyper64, train64, val64 = build(torch.float64)
    torch.manual_seed(5)
    want = t1t2(model64, params64, hyper64, train64, val64)
    model, params, hyper, train, val = build(torch.float32)
    with torch.no_grad():
        for a, b in zip(list(model.parameters()) + list(model.buffers()),
                        list(model64.parameters()) + list(model64.buffers())):
            if a.is_floating_point():
                a.copy_(b)
    torch.manual_seed(5)
    got = jvp_step(model, hyper, train, val)
    assert cos(got, want) > 0.9999
    assert abs(float(got.double().norm() / want.norm()) - 1) < 1e-3


# --- the estimators' options, and what a step leaves behind ---------------

# A valid value other than the default for each row of options.def.
OTHER = {"population": 4, "sigma": 0.01, "temperature": 0.1, "noise": "gauss",
         "antithetic": True, "seed": 3, "seed_schedule": "consecutive", "scale": "t1t2",
         "inner_lr": 0.05, "common_random_numbers": True, "nonfinite": "drop",
         "parallel": "data", "fd_step": 1e-4, "allow_unused": True, "check_replicas": True,
         "keep_train_grad": True, "autocast": False}


def small():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.2), nn.Linear(6, 3)).double()
    lam = torch.tensor([0.3, -0.2], dtype=torch.float64, requires_grad=True)
    spare = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    x, y = torch.randn(10, 4, dtype=torch.float64), torch.randint(3, (10,))

    def train():
        model.train()
        return F.cross_entropy(model(x * (1 + lam[0])), y) + lam[1] ** 2 * model[0].weight.pow(2).sum()

    def val():
        model.eval()
        return F.cross_entropy(model(x[:5]), y[:5])
    return model, lam, spare, train, val


def test_an_option_an_estimator_does_not_use_is_an_error():
    """options.def's EVOGRAD_ESTIMATOR rows, row by row; the check fails for
    every option outside an estimator's list and for none inside it."""
    from evograd import options
    model, lam, _, _, _ = small()
    assert set(options.USES) == set(evograd.ESTIMATORS)
    assert set(OTHER) == {o.name for o in options.OPTIONS} - {"estimator"}
    for estimator, uses in options.USES.items():
        needed = {} if estimator == "evograd" else {"inner_lr": 0.1}
        for name, value in OTHER.items():
            if name in uses:
                continue
            with pytest.raises(ValueError, match=f"estimator '{estimator}' does not use {name}"):
                evograd.EvoGrad(model, [lam], estimator=estimator, **{**needed, name: value})
    for name in options.USES["jvp"]:
        if name not in ("inner_lr", "parallel"):  # parallel: tests/python/test_unrolled_ranks.py
            evograd.EvoGrad(model, [lam], estimator="jvp", inner_lr=0.1, **{name: OTHER[name]})


def test_jvp_needs_the_model():
    model, lam, _, _, _ = small()
    with pytest.raises(ValueError, match="pass the model"):
        evograd.EvoGrad(list(model.parameters()), [lam], estimator="jvp", inner_lr=0.1)
    evograd.EvoGrad(list(model.parameters()), [lam], estimator="jvp", inner_lr=0.1, module=model)


def test_a_parameter_captured_before_the_step_is_an_error():
    model, lam, _, _, val = small()
    weight = model[0].weight  # the closure keeps its own reference

    def train():
        return F.cross_entropy(F.linear(torch.ones(10, 4, dtype=torch.float64) * lam[0], weight)
                               @ model[3].weight[:, :6].T, torch.zeros(10, dtype=torch.long))
    meta = evograd.EvoGrad(model, [lam], estimator="jvp", inner_lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="did not read from the model's modules"):
        meta.step(train, val)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert lam.grad is None


@pytest.mark.parametrize("estimator", ["lookahead", "jvp"])
def test_inner_lr_zero_gives_zeros_to_the_used_hyperparameters(estimator):
    """As T1-T2 with alpha = 0: the used hyperparameters get exact zeros
    (an optimiser's state then advances as with the official code), an
    unused one with allow_unused keeps no gradient."""
    model, lam, spare, train, val = small()
    meta = evograd.EvoGrad(model, [lam, spare], estimator=estimator, inner_lr=0.0,
                           allow_unused=True)
    meta.step(train, val)
    assert lam.grad is not None and torch.equal(lam.grad, torch.zeros_like(lam))
    assert spare.grad is None


@pytest.mark.parametrize("estimator", list(evograd.ESTIMATORS))
def test_training_flags_are_restored(estimator):
    """The validation closure switches the model to eval; the step puts the
    flags back as it found them (train here, eval for one submodule)."""
    model, lam, _, train, val = small()
    model.train()
    model[2].eval()
    options = {} if estimator == "evograd" else {"inner_lr": 0.1}
    evograd.EvoGrad(model, [lam], estimator=estimator, seed=0, **options).step(train, val)
    assert [m.training for m in model.modules()] == [True, True, True, False, True]


def test_a_graph_recorded_before_the_step_stays_valid():
    """LFT builds an auxiliary loss before the meta-step and backpropagates
    it after: the tangents are put on module attributes, never written into
    the parameters, so version counters do not move."""
    model, lam, _, train, val = small()
    aux = model(torch.ones(2, 4, dtype=torch.float64)).pow(2).sum()
    versions = [p._version for p in model.parameters()]
    evograd.EvoGrad(model, [lam], estimator="jvp", inner_lr=0.1).step(train, val)
    assert [p._version for p in model.parameters()] == versions
    aux.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_python_attributes_of_parameters_stay_readable():
    """The official LFT layers read `self.weight.fast` (None outside their
    own fast-weight update) in every forward: the tangent pass's stand-in
    for the parameter carries its Python attributes."""
    class FastLinear(nn.Linear):
        def forward(self, x):
            w = self.weight.fast if self.weight.fast is not None else self.weight
            return F.linear(x, w, self.bias)
    torch.manual_seed(0)
    model = nn.Sequential(FastLinear(4, 6), nn.Tanh(), FastLinear(6, 3)).double()
    for p in model.parameters():
        p.fast = None
    lam = torch.tensor([0.2], dtype=torch.float64, requires_grad=True)
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(3, (8,))

    def train():
        return F.cross_entropy(model(x * (1 + lam)), y)

    def val():
        return F.cross_entropy(model(x[:4]), y[:4])
    want = t1t2(model, list(model.parameters()), [lam], train, val)
    got = jvp_step(model, [lam], train, val)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_a_recurrent_network_sees_the_tangents():
    """nn.LSTM keeps its own list of its weights (LFT's MatchingNet has an
    LSTM): the pass refreshes it, so the LSTM's weights carry their tangents."""
    torch.manual_seed(0)
    lstm, head = nn.LSTM(3, 5, batch_first=True).double(), nn.Linear(5, 2).double()
    model = nn.ModuleDict(dict(lstm=lstm, head=head))
    lam = torch.tensor([0.3], dtype=torch.float64, requires_grad=True)
    x, y = torch.randn(4, 6, 3, dtype=torch.float64), torch.randint(2, (4,))

    def train():
        return F.cross_entropy(head(lstm(x * (1 + lam))[0][:, -1]), y)

    def val():
        return F.cross_entropy(head(lstm(x[:2])[0][:, -1]), y[:2])
    want = t1t2(model, list(model.parameters()), [lam], train, val)
    got = jvp_step(model, [lam], train, val)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert all(w is p for w, p in zip(lstm._flat_weights, lstm.parameters()))


def test_attention_where_the_official_t1t2_cannot_run():
    """torch >= 2.0's default attention on the CPU (the fused kernel) has no
    double backward: the official T1-T2 step raises there, while jvp runs
    and gives what T1-T2 gives with attention written out (torch's math
    kernel). Before torch 2.0 attention was always written out, and T1-T2
    runs."""
    torch.manual_seed(0)
    model = nn.ModuleDict(dict(attn=nn.MultiheadAttention(8, 2, batch_first=True),
                               head=nn.Linear(8, 3)))
    lam = torch.tensor([0.2], requires_grad=True)
    x, y = torch.randn(4, 5, 8), torch.randint(3, (4,))

    def logits(inp):
        h = model["attn"](inp, inp, inp, need_weights=False)[0]
        return model["head"](h.mean(1))

    def train():
        return F.cross_entropy(logits(x * (1 + lam)), y)

    def val():
        return F.cross_entropy(logits(x[:2]), y[:2])
    params = list(model.parameters())
    if hasattr(F, "scaled_dot_product_attention"):
        loss = train()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        with pytest.raises(RuntimeError, match="not implemented"):
            torch.autograd.grad(sum(g.sum() for g in grads), lam)
    want = t1t2(model, params, [lam], train, val)  # attention's math kernel
    got = jvp_step(model, [lam], train, val)
    assert cos(got, want) > 0.9999 and abs(float(got.norm() / want.norm()) - 1) < 1e-4
