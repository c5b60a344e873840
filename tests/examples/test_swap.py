"""The README's swap guides, run as written inside the official loops'
structure (their names, their objects: LFTNet's self.model/model_optim/
ft_optim and set_forward_loss; MetaXL's step_metaxl arguments, main_net's
forward_tail/forward_classifier, per-language RTNs and a reweighting net;
MWN's l_f_meta/l_g_meta with a MetaModule VNet), on our own small models.
Each guide must leave the model as it found it (parameters, buffers, .grad,
training flags) and give T1-T2's hypergradient as the official step computes
it, with the official closures' own .data and .detach(): double backward
through the same closures, float64, to 1e-9 relative."""
import copy
import math
import re
import types
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


def assert_equals_t1t2(got, reference):
    assert reference.norm() > 0
    torch.testing.assert_close(got, reference, rtol=1e-9, atol=1e-9 * float(reference.norm()))


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

    # The official T1-T2 feeds V the detached cost (cost_v.data): the step
    # gives exactly that; with V seeing theta it would be another gradient.
    # (The snippet's optimizer_vnet.step() moved V: one more step, at V now.)
    for h in hyper:
        h.grad = None
    meta.step(train, val)
    g = hyper_grad(hyper)
    assert_equals_t1t2(g, t1t2(weights_see_theta=False))
    assert (g - t1t2(weights_see_theta=True)).norm() > 1e-3 * g.norm()
    assert_restored(model, before)


class Closures(nn.Module):
    """Runs a snippet's closures with the model's tensors swapped by
    torch.func.functional_call, for the T1-T2 reference."""

    def __init__(self, model, closures):
        super().__init__()
        self.model, self.closures = model, closures

    def forward(self, i):
        return self.closures[i]()


def t1t2_reference(model, meta, hyper, closures, lr, rng):
    """T1-T2's hypergradient for `hyper` over meta.params, closures[0] the
    training loss and closures[1] the validation loss, on the RNG state rng."""
    wrapper = Closures(model, closures)
    names = names_of(wrapper, meta.params)

    def call(Q, i):  # buffers as the step finds them at every forward (BatchNorm's)
        return functional(wrapper, meta.params, names)(Q, i)
    for h in meta.hyperparams:
        h.grad = None
    torch.set_rng_state(rng)
    t1t2_step(meta.params, hyper, lambda Q: call(Q, 0), lambda Q: call(Q, 1), lr)
    return hyper_grad(hyper)


# The official LFT code's objects, as small as they come: a metric model with
# FT layers inside its backbone (set_forward_loss(x) -> (scores, loss) over an
# episode x of shape [n_way, n_support + n_query, ...]) and LFTNet's optimisers.
class FTFeature(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1).double()
        self.bn = nn.BatchNorm2d(4).double()
        self.ft = FeatureWiseTransformation(4)

    def forward(self, x):
        return self.ft(torch.relu(self.bn(self.conv(x)))).mean((2, 3))


class ProtoNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.feature = FTFeature()
        self.n_way, self.n_support, self.n_query, self.change_way = 3, 2, 2, True

    def set_forward_loss(self, x):
        z = self.feature(x.reshape(-1, *x.shape[2:])).reshape(x.shape[0], x.shape[1], -1)
        proto = z[:, :self.n_support].mean(1)
        query = z[:, self.n_support:].reshape(-1, z.shape[-1])
        scores = -100 * ((query[:, None] - proto[None]) ** 2).sum(-1)
        y = torch.arange(self.n_way).repeat_interleave(self.n_query)
        return scores, F.cross_entropy(scores, y)


class LFTNetLike:
    def __init__(self):
        self.model = ProtoNet()
        model_params, ft_params = self.split_model_parameters()
        self.model_optim = torch.optim.Adam(model_params)
        self.ft_optim = torch.optim.Adam(ft_params, weight_decay=1e-8, lr=1e-3)

    def split_model_parameters(self):
        model_params, ft_params = [], []
        for n, p in self.model.named_parameters():
            (ft_params if n.split(".")[-1] in ("gamma", "beta") else model_params).append(p)
        return model_params, ft_params


@needs_func
def test_lft_guide_in_the_official_loop():
    torch.manual_seed(1)
    lft = LFTNetLike()
    x, x_new = torch.randn(3, 4, 1, 6, 6, dtype=D), torch.randn(3, 4, 1, 6, 6, dtype=D)
    model = lft.model
    # the official auxiliary loss, recorded before the meta-step (eval mode)
    model.eval()
    x_aux = torch.randn(4, 1, 6, 6, dtype=D)
    aux_loss_weighted = model.feature(x_aux).pow(2).mean() * 0.9
    aux_before = torch.autograd.grad(aux_loss_weighted, model.feature.conv.weight,
                                     retain_graph=True)[0]
    ns = dict(evograd=evograd, self=lft, x=x, x_new=x_new, aux_loss_weighted=aux_loss_weighted)
    model.feature.conv.weight.grad = torch.full_like(model.feature.conv.weight, 3.0)
    before_conv = model.feature.conv.weight.detach().clone()
    official, at_step = copy.deepcopy(model), []

    class Recording(evograd.EvoGrad):  # the random state the step's passes replay
        def step(self, *args, **kwargs):
            at_step.append(torch.get_rng_state())
            return super().step(*args, **kwargs)
    ns["evograd"] = types.SimpleNamespace(EvoGrad=Recording)
    exec(readme_block("lft"), ns)
    # The official update's gradient, by the official sequence on a copy: the
    # auxiliary loss recorded in eval mode, then the pseudo-seen episode at
    # theta, FT on, with the draw of FT noise the step replayed (meta_grad;
    # its forward updates BatchNorm's running statistics in place, a write
    # torch does not count, so the auxiliary backward reads them), then the
    # auxiliary backward.
    official.eval()
    official_aux = official.feature(x_aux).pow(2).mean() * 0.9
    torch.set_rng_state(at_step[0])
    official.train()
    meta_grad = torch.autograd.grad(official.set_forward_loss(x)[1],
                                    official.feature.conv.weight)[0]
    aux_grad = torch.autograd.grad(official_aux, official.feature.conv.weight)[0]
    meta, hyper = lft.meta, lft.split_model_parameters()[1]
    assert [id(h) for h in meta.hyperparams] == [id(h) for h in hyper]
    assert {id(p) for p in meta.params} == {id(p) for p in lft.split_model_parameters()[0]}
    assert meta.inner_lr == lft.model_optim.param_groups[0]["lr"] == 1e-3
    assert isinstance(ns["ft_loss"], torch.Tensor)
    assert not torch.equal(model.feature.conv.weight, before_conv)  # the model update ran
    # the update's gradient: the auxiliary loss's (as recorded) plus meta_grad,
    # as the official update; the running statistics as its one forward left them
    assert aux_before.abs().sum() > 0 and meta_grad.abs().sum() > 0
    assert not torch.allclose(aux_grad, aux_before)  # the statistics moved under it
    torch.testing.assert_close(model.feature.conv.weight.grad, aux_grad + meta_grad,
                               rtol=1e-12, atol=1e-15)
    for b, want in zip(model.buffers(), official.buffers()):
        assert torch.equal(b, want)
    g = hyper_grad(hyper)
    assert torch.isfinite(g).all() and g.abs().sum() > 0

    # Without keep_train_grad the step alone restores everything but λ (the
    # caller's .grad too).
    seen, unseen = (lambda: ns["episode_loss"](x, True)), (lambda: ns["episode_loss"](x_new, False))
    model.train()
    before = state_of(model)
    alone = evograd.EvoGrad(model, hyper, estimator="jvp", inner_lr=lft.model_optim)
    alone.step(seen, unseen)
    model.train()
    assert_restored(model, before, hyper)

    # The snippet's step is T1-T2 through the same closures, on one FT draw
    # (λ's gradient does not depend on keep_train_grad: test_keep_train_grad.py).
    rng = torch.get_rng_state()
    for h in hyper:
        h.grad = None
    alone.step(seen, unseen)
    ours = hyper_grad(hyper)
    reference = t1t2_reference(model, alone, hyper, [seen, unseen], alone.inner_lr, rng)
    assert_equals_t1t2(ours, reference)


# The official MetaXL step's objects: main_net (forward -> (logits, hidden
# states), get_ext_mask, forward_tail, forward_classifier), meta_net (one RTN
# per language and transfer layer, get_alpha), a reweighting net, args.
class MainNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 8).double()
        self.layers = nn.ModuleList(nn.Linear(8, 8).double() for _ in range(3))
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(8, 4).double()

    def forward(self, data, attention_mask=None, for_classification=False):
        h, hs = self.embed(data), []
        hs.append(h)
        for layer in self.layers:
            h = torch.tanh(layer(h))
            hs.append(h)
        return self.forward_classifier(h, for_classification), hs

    def get_ext_mask(self, mask):
        return mask

    def forward_tail(self, start, h, attention_mask=None):
        for layer in self.layers[start - 1:]:
            h = torch.tanh(layer(h))
        return h

    def forward_classifier(self, sequence_output, for_classification=False):
        return self.classifier(self.dropout(sequence_output))


class MetaNet2(nn.Module):
    def __init__(self, languages=2, layers=1):
        super().__init__()
        self.rtn = nn.ModuleList(nn.ModuleList(nn.Sequential(nn.Linear(8, 8), nn.Tanh()).double()
                                               for _ in range(layers)) for _ in range(languages))
        self.alpha = nn.Parameter(torch.zeros(languages, layers, dtype=D))

    def forward(self, language, j, h):
        return self.rtn[language][j](h)

    def get_alpha(self, i):
        return torch.softmax(self.alpha[i], 0)


def masked_cross_entropy(logits, target, weights=None):
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                           reduction="none", ignore_index=-100)
    keep = (target.reshape(-1) != -100).to(loss.dtype)
    w = keep if weights is None else keep * weights
    return (loss * w).sum() / keep.sum()


@needs_func
def test_metaxl_guide_in_the_official_step():
    from types import SimpleNamespace
    torch.manual_seed(2)
    main_net, meta_net = MainNet(), MetaNet2()
    reweighting_model = nn.Sequential(nn.Linear(8, 1), nn.Sigmoid()).double()

    def batch(n):
        return torch.randint(20, (n, 5)), torch.ones(n, 5), torch.randint(4, (n, 5))

    (data_s, mask_s, target_s), (data_g, mask_g, target_g), (data_t, mask_t, target_t) = \
        batch(6), batch(6), batch(6)
    args = SimpleNamespace(task_name="ner", add_instance_weights=True, magic=1.0, seed=0)
    eta = 0.05
    ns = dict(evograd=evograd, main_net=main_net, meta_net=meta_net,
              reweighting_model=reweighting_model, args=args, eta=eta, source_language_id=0,
              transfer_layers=[1], masked_cross_entropy=masked_cross_entropy,
              meta_opt=torch.optim.Adam(meta_net.parameters(), 1e-3),
              main_opt=torch.optim.SGD(main_net.parameters(), eta),
              reweighting_opt=torch.optim.Adam(reweighting_model.parameters(), 1e-3),
              data_s=data_s, mask_s=mask_s, target_s=target_s, data_g=data_g, mask_g=mask_g,
              target_g=target_g, data_t=data_t, mask_t=mask_t, target_t=target_t)
    before = state_of(main_net)
    exec(readme_block("metaxl"), ns)
    assert_restored(main_net, before)
    meta = ns["meta"]
    assert [id(p) for p in meta.params] == [id(p) for p in main_net.parameters()]
    assert meta.inner_lr == eta and isinstance(ns["loss_t"], torch.Tensor)
    # --meta_per_lang: language 1's RTN is unused this step and gets no gradient
    assert all(p.grad is None for p in meta_net.rtn[1].parameters())
    used = [h for h in meta.hyperparams if h.grad is not None]
    g = hyper_grad(used)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert all(p.grad is not None for p in reweighting_model.parameters())

    train, target = ns["loss_train"], ns["loss_target"]
    rng = torch.get_rng_state()  # the same dropout masks for T1-T2 and the step
    for h in meta.hyperparams:
        h.grad = None
    meta.step(train, target)
    ours = hyper_grad(used)
    reference = t1t2_reference(main_net, meta, used, [train, target], eta, rng)
    assert_equals_t1t2(ours, reference)
