"""Writes the TorchScript files and expected numbers that the C++ suite
(test_ops.cpp) checks: a scripted function of the ops, and a scripted model
whose EvoGrad step Python and C++ must agree on."""
import sys
from pathlib import Path
from typing import List

import torch
from torch import nn

import evograd
import scenarios


class CombineModule(nn.Module):
    """theta* through the op inside a TorchScript module."""

    def forward(self, a: torch.Tensor, b: torch.Tensor, losses: torch.Tensor) -> List[torch.Tensor]:
        return torch.ops.evograd.combine([a, b], losses, 0.5, 17, 0.1, "gauss", False)


class MetaMLP(nn.Module):
    """A float64 MLP with one hyperparameter inside (log weight decay) and
    BatchNorm buffers; per-sample weights are a second, outside hyperparameter."""

    def __init__(self):
        super().__init__()
        self.l1 = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.l2 = nn.Linear(8, 3)
        self.log_decay = nn.Parameter(torch.tensor([-2.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.l2(torch.tanh(self.bn(self.l1(x))))

    @torch.jit.export
    def train_loss(self, x: torch.Tensor, y: torch.Tensor, sample_logits: torch.Tensor) -> torch.Tensor:
        per_sample = ((self.forward(x) - y) ** 2).sum(1)
        decay = torch.exp(self.log_decay) * (self.l1.weight ** 2).sum()
        return (torch.sigmoid(sample_logits) * per_sample).mean() + decay.sum()

    @torch.jit.export
    def val_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ((self.forward(x) - y) ** 2).sum(1).mean()


class TiedAutoencoder(nn.Module):
    """Decoder and encoder share one weight: parameters() lists it once in
    Python, while a C++ jit::Module lists it once per use."""

    def __init__(self):
        super().__init__()
        self.enc = nn.Linear(5, 5)
        self.dec = nn.Linear(5, 5)
        self.dec.weight = self.enc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.tanh(self.enc(x)))


class Holder(nn.Module):
    """Named tensors for C++ to read back (as buffers)."""

    def __init__(self, tensors):
        super().__init__()
        for name, t in tensors.items():
            self.register_buffer(name, t.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def main(out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    # 1. A scripted function of the ops, and its gradient to the losses.
    comb = torch.jit.script(CombineModule())
    comb.save(str(out_dir / "combine.pt"))
    comb = torch.jit.load(str(out_dir / "combine.pt"))
    a = torch.randn(3, 5, dtype=torch.float64)
    b = torch.randn(7, dtype=torch.float64)
    losses = torch.tensor([0.3, 0.1, 0.7, 0.2], dtype=torch.float64, requires_grad=True)
    out = comb(a, b, losses)
    (sum((o ** 2).sum() for o in out)).backward()
    expected = {"a": a, "b": b, "losses": losses, "theta_a": out[0], "theta_b": out[1],
                "dlosses": losses.grad}

    # 2. One EvoGrad step on a scripted model, the numbers C++ must reproduce.
    model = torch.jit.script(MetaMLP().double())
    model.save(str(out_dir / "meta_mlp.pt"))
    model = torch.jit.load(str(out_dir / "meta_mlp.pt"))
    model.train()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    xv, yv = torch.randn(10, 4, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    logits = torch.zeros(16, dtype=torch.float64).uniform_(-1, 1).requires_grad_()
    decay = [p for n, p in model.named_parameters() if n == "log_decay"][0]
    params = [p for n, p in model.named_parameters() if n != "log_decay"]
    meta = evograd.EvoGrad(params, [decay, logits], population=4, sigma=0.01, temperature=0.1,
                           noise="gauss", seed=5, buffers=list(model.buffers()))
    results = [meta.step(lambda: model.train_loss(x, y, logits), lambda: model.val_loss(xv, yv))
               for _ in range(2)]  # two steps: the seed advances
    expected.update({"x": x, "y": y, "xv": xv, "yv": yv, "logits": logits.detach(),
                     "grad_decay": decay.grad, "grad_logits": logits.grad,
                     "losses_step1": results[1].losses, "val_step1": torch.tensor(results[1].val_loss, dtype=torch.float64),
                     "seed_step1": torch.tensor(results[1].seed, dtype=torch.int64)})

    # 3. A scripted model with tied weights: Python's step, for C++ to match.
    tied = torch.jit.script(TiedAutoencoder().double())
    tied.save(str(out_dir / "tied.pt"))
    tied = torch.jit.load(str(out_dir / "tied.pt"))
    xt = torch.randn(12, 5, dtype=torch.float64)
    tied_logits = torch.zeros(12, dtype=torch.float64).uniform_(-1, 1).requires_grad_()
    meta = evograd.EvoGrad(tied, tied_logits, population=3, sigma=0.01, temperature=0.1,
                           seed=9)
    assert len(meta.params) == 3, "the tied weight is perturbed once"
    r = meta.step(lambda: (torch.sigmoid(tied_logits) * ((tied(xt) - xt) ** 2).sum(1)).mean(),
                  lambda: ((tied(xt[:6]) - xt[:6]) ** 2).mean())
    expected.update({"tied_x": xt, "tied_logits": tied_logits.detach(),
                     "tied_grad_logits": tied_logits.grad, "tied_losses": r.losses})
    # 4. The scenario table, through Python; test_ops.cpp replays it in C++.
    torch.manual_seed(0)
    torch.jit.script(scenarios.ScenarioNet().double()).save(str(out_dir / "scenario_net.pt"))
    d = scenarios.data()
    expected.update({f"scenario__{k}": v for k, v in d.items()})
    lines = []
    for sc in scenarios.TABLE:
        try:
            got = scenarios.run(sc, str(out_dir / "scenario_net.pt"), d)
            outcome = "ok"
        except (ValueError, TypeError) as e:
            outcome = f"{type(e).__name__}:{e}"
        kind, _, fragment = sc.expect.partition(":")
        assert outcome.startswith(kind) and fragment in outcome, (sc.name, outcome)
        if outcome == "ok":
            expected.update({f"{sc.name}__{k}": v for k, v in got.items()})
            assert sc.options["nonfinite"] != "drop" or int(got["dropped"]) > 0, "a candidate was dropped"
        lines.append(scenarios.table_line(sc))
    (out_dir / "scenarios.txt").write_text("\n".join(lines) + "\n")
    torch.jit.script(Holder(expected)).save(str(out_dir / "expected.pt"))
    print("wrote", out_dir / "combine.pt", out_dir / "meta_mlp.pt", out_dir / "expected.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "."))
