"""The README's swap guides, run as written on models built the way the
official Meta-Weight-Net, LFT and MetaXL code builds them (our own small
versions): MetaModule weights registered as buffers, FT layers inside the
backbone, an RTN between encoder layers. Each guide must leave the model as
it found it (parameters, buffers, .grad), give a finite non-zero λ-gradient,
and with scale="t1t2" estimate T1-T2's hypergradient on the same batch:
averaged over steps, cosine >= 0.9 and norm within 2x."""
import math
import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import evograd
from evograd.baselines import t1t2_step

README = Path(__file__).resolve().parents[2] / "README.md"
D = torch.float64


def readme_block(name):
    text = README.read_text()
    m = re.search(r"<!-- swap:%s -->\s*```python\n(.*?)```" % name, text, re.S)
    assert m, f"README.md has no swap:{name} block"
    return m.group(1)


# ---- models built the official codes' way ------------------------------------------

class MetaLinear(nn.Module):
    """A MetaModule layer: weights are buffers that require grad."""

    def __init__(self, n_in, n_out):
        super().__init__()
        w = torch.empty(n_out, n_in, dtype=D)
        nn.init.kaiming_uniform_(w, a=math.sqrt(5))
        self.register_buffer("weight", w.requires_grad_())
        self.register_buffer("bias", torch.zeros(n_out, dtype=D, requires_grad=True))

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)


class MetaVNet(nn.Module):
    """The official VNet as a MetaModule: 1 -> hidden -> 1, sigmoid."""

    def __init__(self, hidden=8):
        super().__init__()
        self.linear1, self.linear2 = MetaLinear(1, hidden), MetaLinear(hidden, 1)

    def forward(self, x):
        return torch.sigmoid(self.linear2(torch.relu(self.linear1(x))))


class MetaBatchNorm1d(nn.Module):
    def __init__(self, n):
        super().__init__()
        self.register_buffer("weight", torch.ones(n, dtype=D, requires_grad=True))
        self.register_buffer("bias", torch.zeros(n, dtype=D, requires_grad=True))
        self.register_buffer("running_mean", torch.zeros(n, dtype=D))
        self.register_buffer("running_var", torch.ones(n, dtype=D))

    def forward(self, x):
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training, 0.1, 1e-5)


class MetaNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.bn, self.fc2 = MetaLinear(6, 12), MetaBatchNorm1d(12), MetaLinear(12, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


class FeatureWiseTransformation(nn.Module):
    """LFT's FT layer inside the backbone: random scale and shift in training."""

    def __init__(self, n):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((1, n, 1, 1), 0.3, dtype=D))
        self.beta = nn.Parameter(torch.full((1, n, 1, 1), 0.5, dtype=D))

    def forward(self, x):
        if not self.training:
            return x
        g = 1 + torch.randn(1, x.shape[1], 1, 1, dtype=D) * F.softplus(self.gamma)
        b = torch.randn(1, x.shape[1], 1, 1, dtype=D) * F.softplus(self.beta)
        return g * x + b


class FTBackbone(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1).double()
        self.bn = nn.BatchNorm2d(4).double()
        self.ft = FeatureWiseTransformation(4)
        self.head = nn.Linear(4, 3).double()

    def forward(self, x):
        h = self.ft(torch.relu(self.bn(self.conv(x))))
        return self.head(h.mean((2, 3)))


class Encoder(nn.Module):
    """Two encoder layers with MetaXL's RTN between them, and a token head."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8).double()
        self.layer1 = nn.Linear(8, 8).double()
        self.dropout = nn.Dropout(0.1)
        self.layer2 = nn.Linear(8, 8).double()
        self.classifier = nn.Linear(8, 4).double()

    def forward(self, tokens, rtn=None):
        h = torch.tanh(self.layer1(self.embed(tokens)))
        if rtn is not None:
            h = rtn(h)
        return self.classifier(self.dropout(torch.tanh(self.layer2(h))))


# ---- checks shared by the three guides -----------------------------------------------

def state_of(model):
    return ({n: t.detach().clone() for n, t in model.state_dict(keep_vars=True).items()},
            {n: (None if t.grad is None else t.grad.clone())
             for n, t in model.named_parameters()})


def assert_restored(model, before, hyper=()):
    """Everything but the hyperparameters (which the snippet's optimiser moves)."""
    values, grads = before
    now_values, now_grads = state_of(model)
    skip = {n for n, t in model.named_parameters() if any(t is h for h in hyper)}
    for n in set(values) - skip:
        assert torch.equal(values[n], now_values[n]), n
    for n in set(grads) - skip:
        assert (grads[n] is None) == (now_grads[n] is None), n
        assert grads[n] is None or torch.equal(grads[n], now_grads[n]), n


def hyper_grad(hyper):
    return torch.cat([h.grad.flatten() for h in hyper])


def scaled_estimates(meta, hyper, train, val, steps, rng=None):
    """`steps` EvoGrad hypergradients on one batch, one row each."""
    samples = []
    for _ in range(steps):
        for h in hyper:
            h.grad = None
        if rng is not None:
            torch.set_rng_state(rng)
        meta.step(train, val)
        samples.append(hyper_grad(hyper))
    return torch.stack(samples)


def compare(S, reference):
    """Cosine and norm ratio of the samples' mean to `reference`. First, that
    the standard error of the mean along the reference is small next to the
    vectors compared (the larger of the two norms)."""
    mean = S.mean(0)
    cos = (mean @ reference / (mean.norm() * reference.norm())).item()
    ratio = (mean.norm() / reference.norm()).item()
    u = reference / reference.norm()
    se = ((S @ u).std() / math.sqrt(len(S)) / max(mean.norm(), reference.norm())).item()
    # Enough samples that noise cannot decide the outcome.
    assert se < 0.1, f"too few samples: relative standard error {se:.3f}"
    return cos, ratio


def assert_estimates_t1t2(S, reference):
    cos, ratio = compare(S, reference)
    assert cos >= 0.9 and 0.5 <= ratio <= 2.0, (cos, ratio)


def functional(model, tensors, names):
    extra = {n: b.detach().clone() for n, b in model.named_buffers() if n not in names}

    def call(Q, *args):
        return torch.func.functional_call(model, {**dict(zip(names, Q)), **extra}, args)
    return call


def names_of(model, tensors):
    ids = {id(t): n for n, t in list(model.named_parameters()) + list(model.named_buffers())}
    return [ids[id(t)] for t in tensors]


needs_func = pytest.mark.skipif(not hasattr(torch, "func"), reason="T1-T2 reference uses torch.func")


# ---- the guides ------------------------------------------------------------------------

@needs_func
def test_mwn_guide_on_a_metamodule_model():
    torch.manual_seed(0)
    model, lr = MetaNet(), 0.1
    vnet = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid()).double()
    assert not list(model.parameters())  # every weight is a buffer, as in MetaModule
    vnet = MetaVNet()  # the official VNet is a MetaModule too: its weights are buffers
    optimizer_model = torch.optim.SGD(list(model.buffers()), lr=lr)

    def accuracy(output, target, topk=(1,)):  # the official helper
        return [100.0 * (output.argmax(1) == target).double().mean()]

    ns = dict(evograd=evograd, F=F, torch=torch, model=model, vnet=vnet,
              optimizer_model=optimizer_model, accuracy=accuracy, meta_loss=0.0,
              inputs=torch.randn(24, 6, dtype=D), targets=torch.randint(3, (24,)),
              inputs_val=torch.randn(16, 6, dtype=D), targets_val=torch.randint(3, (16,)),
              optimizer_vnet=torch.optim.SGD(list(vnet.buffers()), 1e-3, momentum=0.9,
                                             nesterov=True, weight_decay=5e-4))
    before = state_of(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a module restores its buffers: no warning
        exec(readme_block("mwn"), ns)
    ns["meta_inputs"], ns["meta_targets"] = ns["inputs_val"], ns["targets_val"]
    ns["weighted_train_loss"], ns["meta_loss_and_outputs"] = ns["l_f_meta"], ns["l_g_meta"]
    ns["meta_outputs"] = ns["result"].aux
    assert_restored(model, before)
    meta, hyper = ns["meta"], list(vnet.buffers())
    assert meta.inner_lr == lr and ns["prec_meta"] >= 0
    assert len(meta.params) == 6 and {id(b) for b in meta.buffers} == \
        {id(model.bn.running_mean), id(model.bn.running_var)}
    g = hyper_grad(hyper)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # aux: the outputs at theta*, whose loss is the step's validation loss.
    assert ns["meta_outputs"].shape == (16, 3)
    assert math.isclose(ns["meta_loss"], F.cross_entropy(ns["meta_outputs"], ns["meta_targets"]).item(),
                        rel_tol=1e-12)

    train, val = ns["weighted_train_loss"], lambda: ns["meta_loss_and_outputs"]()[0]
    S = scaled_estimates(meta, hyper, train, val, steps=4000)
    assert_restored(model, before)
    call = functional(model, meta.params, names_of(model, meta.params))

    def t1t2(weights_see_theta):
        def train_q(Q):
            cost = F.cross_entropy(call(Q, ns["inputs"]), ns["targets"], reduction="none")
            cost = cost.reshape(-1, 1)
            return (cost * vnet(cost if weights_see_theta else cost.detach())).sum() / len(cost)
        for h in hyper:
            h.grad = None
        t1t2_step(meta.params, hyper, train_q,
                  lambda Q: F.cross_entropy(call(Q, ns["meta_inputs"]), ns["meta_targets"]), lr)
        return hyper_grad(hyper)

    # A perturbed candidate's loss also changes through the weighting net's
    # input (the detached per-example cost), which the official T1-T2 leaves
    # out of its inner gradient. Against T1-T2 with that path, EvoGrad's
    # scaled estimate matches in direction and size; against the official
    # (detached) T1-T2, in direction.
    assert_estimates_t1t2(S, t1t2(weights_see_theta=True))
    cos, _ = compare(S, t1t2(weights_see_theta=False))
    assert cos >= 0.9


@needs_func
def test_lft_guide_with_ft_layers_inside_the_backbone():
    torch.manual_seed(1)
    model, model_lr = FTBackbone(), 1e-3

    def episode():
        return torch.randn(9, 1, 6, 6, dtype=D), torch.arange(3).repeat(3)

    def seen_loss(m, ep, forward=None):
        m.train()
        x, y = ep
        return F.cross_entropy((forward or m)(x), y)

    def unseen_loss(m, ep, forward=None):
        m.eval()
        x, y = ep
        return F.cross_entropy((forward or m)(x), y)

    seen, unseen = episode(), episode()
    ns = dict(evograd=evograd, model=model, model_lr=model_lr, seen_loss=seen_loss,
              unseen_loss=unseen_loss, seen_episode=seen, unseen_episode=unseen)
    ns["ft_optimizer"] = torch.optim.Adam(model.ft.parameters(), 1e-3)
    model.conv.weight.grad = torch.full_like(model.conv.weight, 3.0)  # the caller's, kept
    model.train()
    before = state_of(model)
    exec(readme_block("lft"), ns)
    model.train()
    meta, hyper = ns["meta"], ns["ft_params"]
    assert_restored(model, before, hyper)
    g = hyper_grad(hyper)
    assert torch.isfinite(g).all() and g.abs().sum() > 0

    rng = torch.get_rng_state()  # one FT draw for T1-T2 and every EvoGrad step
    call = functional(model, meta.params, names_of(model, meta.params))
    for h in hyper:
        h.grad = None
    torch.set_rng_state(rng)
    t1t2_step(meta.params, hyper, lambda Q: seen_loss(model, seen, lambda x: call(Q, x)),
              lambda Q: unseen_loss(model, unseen, lambda x: call(Q, x)), model_lr)
    reference = hyper_grad(hyper)
    S = scaled_estimates(meta, hyper, lambda: seen_loss(model, seen),
                         lambda: unseen_loss(model, unseen), steps=4000, rng=rng)
    assert_estimates_t1t2(S, reference)


@needs_func
def test_metaxl_guide_with_an_rtn_between_encoder_layers():
    torch.manual_seed(2)
    model, lr = Encoder(), 0.05
    rtn = nn.Sequential(nn.Linear(8, 8), nn.Tanh()).double()

    def batch(n):
        return torch.randint(20, (n, 5)), torch.randint(4, (n, 5))

    def train_loss(m, r, source, target, head=None):
        m.train()
        out_s = m(source[0], rtn=r) if head is None else head(source[0], r)
        out_t = m(target[0]) if head is None else head(target[0], None)
        return (F.cross_entropy(out_s.reshape(-1, 4), source[1].reshape(-1))
                + F.cross_entropy(out_t.reshape(-1, 4), target[1].reshape(-1)))

    def token_loss(m, target, head=None):
        m.train()
        out = m(target[0]) if head is None else head(target[0], None)
        return F.cross_entropy(out.reshape(-1, 4), target[1].reshape(-1))

    src, ta, tb = batch(6), batch(6), batch(6)
    ns = dict(evograd=evograd, model=model, rtn=rtn, lr=lr, train_loss=train_loss,
              token_loss=token_loss, source_batch=src, target_batch_a=ta, target_batch_b=tb,
              rtn_optimizer=torch.optim.Adam(rtn.parameters(), 1e-3))
    before = state_of(model)
    exec(readme_block("metaxl"), ns)
    assert_restored(model, before)
    meta, hyper = ns["meta"], list(rtn.parameters())
    assert [id(p) for p in meta.params] == [id(p) for p in model.classifier.parameters()]
    g = hyper_grad(hyper)
    assert torch.isfinite(g).all() and g.abs().sum() > 0

    # T1-T2 over the same perturbed set (the head), the same dropout masks.
    rng = torch.get_rng_state()
    call = functional(model, meta.params, names_of(model, meta.params))
    for h in hyper:
        h.grad = None
    torch.set_rng_state(rng)
    head = lambda Q: (lambda tokens, r: call(Q, tokens, r))
    t1t2_step(meta.params, hyper, lambda Q: train_loss(model, rtn, src, ta, head(Q)),
              lambda Q: token_loss(model, tb, head(Q)), lr)
    reference = hyper_grad(hyper)
    S = scaled_estimates(meta, hyper, lambda: train_loss(model, rtn, src, ta),
                         lambda: token_loss(model, tb), steps=4000, rng=rng)
    assert_estimates_t1t2(S, reference)
