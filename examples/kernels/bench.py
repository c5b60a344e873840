#!/usr/bin/env python3
"""Effective bandwidth of the evograd kernels (bytes read + written per
second) next to a plain copy measured in the same run, at 1M..64M elements;
and the cost of a ResNet-32 parameter list (~100 tensors) against one flat
tensor of the same size, which shows whether a call costs one launch or one
per tensor.

    .venv/bin/python examples/kernels/bench.py --device cuda --out results/kernels_cuda
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "mwn"))

import torch  # noqa: E402

from common import ab  # noqa: E402  (first: it makes evograd importable)
import evograd  # noqa: E402


def timeit(fn, device, repeats, inner):
    """Median seconds per call over `repeats` batches of `inner` back-to-back
    calls: on CUDA one synchronisation per batch, so that, as in training,
    launches queue behind running kernels instead of each paying a round trip."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t) / inner)
    return statistics.median(times)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--log2-sizes", type=int, nargs="*", default=[20, 22, 24, 26])
    p.add_argument("--population", type=int, default=2)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--inner", type=int, default=0, help="calls per timed batch (0: 20 on CUDA, 1 on CPU)")
    p.add_argument("--noise", choices=["sign", "gauss"], default="sign")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=Path("results/kernels"))
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    inner = args.inner or (20 if device.type == "cuda" else 1)
    K = args.population
    noise = args.noise
    losses = torch.linspace(0.1, 0.2, K, dtype=torch.float64)
    rows = []
    for lg in args.log2_sizes:
        n = 1 << lg
        x = torch.randn(n, device=device)
        y = torch.empty_like(x)
        b = 4 * n  # bytes of one float32 pass
        with torch.no_grad():
            cases = {
                "copy": (lambda: y.copy_(x), 2 * b),
                "perturb": (lambda: evograd.perturb_into([x], [y], 1, 0, 1e-3, noise), 2 * b),
                "combine": (lambda: evograd.combine_into([x], losses, [y], 0.05, 1, 1e-3, noise), 2 * b),
                "project": (lambda: evograd.project([x], 1, K, 1e-3, noise), b),
            }
            for name, (fn, nbytes) in cases.items():
                s = timeit(fn, device, args.repeats, inner)
                rows.append({"op": name, "elements": n, "seconds": s, "gb_per_s": nbytes / s / 1e9})
    from models import ResNet32
    model = ResNet32().to(device)
    params = [p.detach() for p in model.parameters()]
    flat = [torch.cat([p.flatten() for p in params])]
    with torch.no_grad():
        t_list = timeit(lambda: evograd.perturb_into(params, params, 1, 0, 1e-3), device, args.repeats, inner)
        t_flat = timeit(lambda: evograd.perturb_into(flat, flat, 1, 0, 1e-3), device, args.repeats, inner)
        # Cost only (each call would restart the noise at index 0): what a
        # launch per tensor, as a loop over parameters does, would take.
        t_each = timeit(lambda: [evograd.perturb_into([p], [p], 1, 0, 1e-3) for p in params],
                        device, args.repeats, inner)
    launch = {"tensors": len(params), "elements": sum(p.numel() for p in params),
              "list_s": t_list, "flat_s": t_flat, "per_tensor_calls_s": t_each, "ratio": t_list / t_flat}
    meta = {"device": ab.device_label(args.device), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d"),
            "population": K, "noise": noise, "threads": torch.get_num_threads(), "calls_per_batch": inner}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "kernels.json").write_text(json.dumps({"meta": meta, "rows": rows, "resnet32_list": launch}, indent=1))
    lines = [f"# kernel bandwidth, float32, K={K}, {noise} noise: {meta['device']}, {meta['threads']} threads, torch {meta['torch']}, {meta['date']}",
             f"{'elements':>10} " + " ".join(f"{op:>18}" for op in ("copy", "perturb", "combine", "project"))]
    for lg in args.log2_sizes:
        n = 1 << lg
        cells = []
        copy = next(r for r in rows if r["op"] == "copy" and r["elements"] == n)["gb_per_s"]
        for op in ("copy", "perturb", "combine", "project"):
            r = next(r for r in rows if r["op"] == op and r["elements"] == n)
            cells.append(f"{r['gb_per_s']:7.1f} GB/s {100 * r['gb_per_s'] / copy:4.0f}%")
        lines.append(f"{n:>10} " + " ".join(f"{c:>18}" for c in cells))
    lines.append(f"ResNet-32 list ({launch['tensors']} tensors, {launch['elements']} elements): one call "
                 f"{1e3 * t_list:.3f} ms, one flat tensor {1e3 * t_flat:.3f} ms ({launch['ratio']:.2f}x), "
                 f"a call per tensor {1e3 * t_each:.3f} ms")
    report = "\n".join(lines)
    (args.out / "kernels.txt").write_text(report + "\n")
    print(report)


if __name__ == "__main__":
    main()
