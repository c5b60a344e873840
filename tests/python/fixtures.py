"""Small problems and checks shared by the meta-step suites."""
import torch
from torch import nn


def mlp_fixture(dtype):
    """A small MLP with a hyperparameter inside (log weight decay of layer 1)
    and one outside (per-sample loss weights). Values are float32-representable,
    so the float32 and float64 fixtures hold the same numbers."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape, scale=1.0, uniform=False):
        t = torch.rand(*shape, generator=g, dtype=torch.float64) * 2 - 1 if uniform else \
            torch.randn(*shape, generator=g, dtype=torch.float64)
        return (t * scale).to(torch.float32).to(dtype)

    P = [rand(8, 4, scale=0.5), torch.zeros(8, dtype=dtype), rand(3, 8, scale=0.5), torch.zeros(3, dtype=dtype)]
    P = [p.requires_grad_() for p in P]
    log_decay = torch.tensor([-3.0], dtype=dtype, requires_grad=True)
    sample_logits = rand(16, uniform=True).requires_grad_()
    x, y = rand(16, 4), rand(16, 3)
    xv, yv = rand(12, 4), rand(12, 3)

    def net(Q, inp):
        return torch.tanh(inp @ Q[0].T + Q[1]) @ Q[2].T + Q[3]

    def train(Q):
        per_sample = ((net(Q, x) - y) ** 2).sum(1)
        return (torch.sigmoid(sample_logits) * per_sample).mean() + torch.exp(log_decay).sum() * (Q[0] ** 2).sum()

    def val(Q):
        return ((net(Q, xv) - yv) ** 2).sum(1).mean()

    return P, [log_decay, sample_logits], train, val


KW = dict(population=4, sigma=0.01, temperature=0.1, seed=123)


class BNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.bn = nn.BatchNorm1d(6)
        self.drop = nn.Dropout(0.3)
        self.out = nn.Linear(6, 2)
        self.lam = nn.Parameter(torch.tensor([0.1]))  # a hyperparameter inside the model

    def forward(self, x):
        return self.out(self.drop(torch.relu(self.bn(self.fc(x)))))


def snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()},
            {n: (None if p.grad is None else p.grad.clone()) for n, p in model.named_parameters()},
            {n: p.requires_grad for n, p in model.named_parameters()})


def assert_same(model, snap):
    state, grads, flags = snap
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
        assert v.dtype == state[k].dtype
    for n, p in model.named_parameters():
        assert (p.grad is None) == (grads[n] is None), n
        if p.grad is not None:
            assert torch.equal(p.grad, grads[n]), n
        assert p.requires_grad == flags[n]
