"""CUDA operators against the CPU ones. Run by scripts/gpu_check.sh on a GPU
machine; skipped (with the reason printed by pytest -rs) elsewhere."""
import pytest
import torch

import evograd

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

SHAPES = [(64, 3, 3, 3), (7,), (0,), (1000, 33), (5,)]


def lists(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    cpu = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in SHAPES]
    return cpu, [t.cuda() for t in cpu]


ALL_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_sign_noise_is_bit_identical_on_cpu_and_cuda(dtype):
    cpu, gpu = lists(dtype)
    losses = torch.tensor([0.3, 0.1, 0.2, 0.5], dtype=torch.float64)
    for k in range(4):
        for a, b in zip(evograd.perturb(cpu, 7, k, 0.01), evograd.perturb(gpu, 7, k, 0.01)):
            assert torch.equal(a, b.cpu())
    for a, b in zip(evograd.combine(cpu, losses, 0.1, 7, 0.01), evograd.combine(gpu, losses, 0.1, 7, 0.01)):
        assert torch.equal(a, b.cpu())


@pytest.mark.parametrize("dtype", ALL_DTYPES)
def test_gauss_noise_and_projections_agree(dtype):
    cpu, gpu = lists(dtype, seed=1)
    # Device log/sin/cos may differ from the host's in the last double bit,
    # then one rounding to dtype: a few ulps of dtype at most.
    tol = 4 * torch.finfo(dtype).eps
    for a, b in zip(evograd.perturb(cpu, 3, 1, 0.5, "gauss"), evograd.perturb(gpu, 3, 1, 0.5, "gauss")):
        assert torch.allclose(a, b.cpu(), rtol=tol, atol=tol)
    c_cpu = evograd.project(cpu, 3, 5, 0.5, "gauss")
    c_gpu = evograd.project(gpu, 3, 5, 0.5, "gauss")
    assert torch.equal(c_gpu, evograd.project(gpu, 3, 5, 0.5, "gauss"))  # run to run
    assert c_gpu.dtype == c_cpu.dtype and c_gpu.device.type == "cuda"
    mag = sum((t.double().abs() * 0.5 * 7).sum() for t in cpu)  # |z| < 6.7
    # float64 sums in another order, returned as float64 (float64 lists) or
    # float32 (the others): the result's own rounding dominates.
    rel = 1e-14 if dtype == torch.float64 else 1e-7
    assert torch.allclose(c_cpu.double(), c_gpu.double().cpu(), rtol=0, atol=float(mag) * rel)


def test_combine_autograd_and_torchscript_on_cuda():
    cpu, gpu = lists(torch.float64, seed=2)
    lc = torch.tensor([0.5, 0.2, 0.9], dtype=torch.float64, requires_grad=True)
    lg = lc.detach().cuda().requires_grad_()
    sum((o ** 2).sum() for o in evograd.combine(cpu, lc, 0.3, 1, 0.1, "gauss")).backward()
    sum((o ** 2).sum() for o in evograd.combine(gpu, lg, 0.3, 1, 0.1, "gauss")).backward()
    assert torch.allclose(lc.grad, lg.grad.cpu(), rtol=1e-10, atol=1e-12)

    @torch.jit.script
    def star(a: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
        return torch.ops.evograd.combine([a], losses, 0.1, 3, 0.01, "sign", False)[0]

    a = torch.randn(100)
    l = torch.tensor([0.2, 0.1])
    assert torch.equal(star(a.cuda(), l.cuda()).cpu(), star(a, l))


def test_step_on_cuda_matches_cpu():
    def run(device):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(),
                                    torch.nn.Linear(16, 3)).double().to(device)
        lam = torch.tensor([0.1, -0.2], dtype=torch.float64, device=device, requires_grad=True)
        g = torch.Generator().manual_seed(1)
        x, y = torch.randn(32, 6, generator=g, dtype=torch.float64).to(device), torch.randn(32, 3, generator=g, dtype=torch.float64).to(device)
        meta = evograd.EvoGrad(model, [lam], population=4, sigma=0.01, temperature=0.1, seed=5)
        meta.step(lambda: ((model(x) - y) ** 2).mean() * torch.exp(lam[0]) + lam[1] * model[0].weight.sum(),
                  lambda: ((model(x) - 0.5 * y) ** 2).mean())
        return lam.grad.cpu()
    assert torch.allclose(run("cpu"), run("cuda"), rtol=1e-9, atol=1e-12)


def test_mixed_devices_are_rejected():
    with pytest.raises(ValueError, match="one device"):
        evograd.perturb([torch.zeros(3), torch.zeros(3, device="cuda")], 0, 0, 0.1)
    with pytest.raises(ValueError, match="is on"):
        with torch.no_grad():
            evograd.perturb_into([torch.zeros(3, device="cuda")], [torch.zeros(3)], 0, 0, 0.1)
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="one device"):
            evograd.perturb([torch.zeros(3, device="cuda:0"), torch.zeros(3, device="cuda:1")], 0, 0, 0.1)


def test_weights_and_cotangent_stay_on_the_device():
    """Same values as the CPU's C kernel; a non-finite input makes every
    output NaN (reporting it would need a host sync)."""
    losses = torch.tensor([0.3, 0.1, 0.2, 0.9], dtype=torch.float64)
    c = torch.tensor([0.5, -0.2, 0.1, 0.0], dtype=torch.float64)
    w = evograd.weights(losses.cuda(), 0.1)
    cot = evograd.loss_cotangent(losses.cuda(), c.cuda(), 0.1)
    assert w.is_cuda and cot.is_cuda
    assert torch.allclose(w.cpu(), evograd.weights(losses, 0.1), rtol=1e-14, atol=0)
    assert torch.allclose(cot.cpu(), evograd.loss_cotangent(losses, c, 0.1), rtol=1e-12, atol=1e-15)
    bad = losses.clone()
    bad[2] = float("inf")
    assert torch.isnan(evograd.weights(bad.cuda(), 0.1)).all()
    assert torch.isnan(evograd.loss_cotangent(bad.cuda(), c.cuda(), 0.1)).all()
    with pytest.raises(ValueError, match="not finite"):
        evograd.weights(bad, 0.1)
