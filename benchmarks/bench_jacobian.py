"""Benchmark: the full Jacobian spectrum of a depth-32, width-1024 MLP (issue 4, Performance).

Measured in one run, on the same machine and threads:

* the machine's fp32 matmul rate (N×N @ N×N, best of several repeats);
* the chain product J ← D_l(W_l J) inside ``jacobian_spectrum`` (fp32), as a fraction of
  that rate (target ≥ 50%);
* end to end ``jacobian_spectrum`` (product + SVD) against the lower bound "L plain matmuls
  + one ``svdvals``" measured here (target within 2×);
* ``torch.autograd.functional.jacobian`` with default settings + ``svdvals`` (target
  ≥ 10× slower than ours);
* the float64 default of ``jacobian_spectrum`` for reference;
* torchvision ResNet-18 (eval mode, 10 classes) at one 32×32 input: the exact spectrum
  (reverse mode) against ``method="lanczos"`` (top 6, 8 probes × 60 steps, batched) and
  what ``method="auto"`` chooses (issue 10: Lanczos took 531 s against 30 s exact).

Usage: ``python benchmarks/bench_jacobian.py [--quick]`` (``--quick``: depth 8, width 512).
Writes ``benchmarks/results/jacobian.md``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from _machine import load_note, machine, save_report
from torch import nn

from sigprop.diagnostics import jacobian_spectrum
from sigprop.diagnostics.jacobian import _chain_jacobian, chain_ops


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _mlp(width: int, depth: int, dtype) -> nn.Sequential:
    gen = torch.Generator().manual_seed(0)
    layers = []
    for _ in range(depth):
        lin = nn.Linear(width, width, dtype=dtype)
        with torch.no_grad():
            lin.weight.normal_(0.0, math.sqrt(1.76 / width), generator=gen)
            lin.bias.normal_(0.0, math.sqrt(0.05), generator=gen)
        layers += [lin, nn.Tanh()]
    return nn.Sequential(*layers)


def _resnet_rows() -> list[tuple[str, str, str]]:
    from sigprop.nn.arch import build_model

    torch.manual_seed(0)  # benchmark-side seeding of torchvision's initialisers
    model = build_model("torchvision:resnet18", num_classes=10).double().eval()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t0 = time.perf_counter()
    exact = jacobian_spectrum(model, x, progress=False)
    t_exact = time.perf_counter() - t0
    t0 = time.perf_counter()
    lan = jacobian_spectrum(model, x, method="lanczos", k=6, progress=False)
    t_lan = time.perf_counter() - t0
    auto = jacobian_spectrum(model, x, progress=False).method
    err = float(np.max(np.abs(lan.singular_values[0] - exact.singular_values[0, :6])))
    rel = err / float(exact.singular_values[0, 0])
    return [
        ("ResNet-18 32×32, exact (float64)", "", f"{t_exact:.2f} s via {exact.method}"),
        (
            "ResNet-18 32×32, lanczos k=6 (float64)",
            f"{lan.n_matvec} products",
            f"{t_lan:.2f} s; top-6 max error {rel:.1e} of σ₁; auto picks {auto}",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="depth 8, width 512")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads for every measurement (default 1: on a shared, "
        "oversubscribed machine more threads mostly measure contention)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "jacobian.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    depth, width = (8, 512) if args.quick else (32, 1024)
    reps = args.repeats
    n = width
    x32 = torch.randn(1, width, generator=torch.Generator().manual_seed(1))

    a = torch.randn(n, n)
    b = torch.randn(n, n)
    t_mm = _best(lambda: a @ b, max(reps, 5))
    rate = 2 * n**3 / t_mm  # flop/s

    model = _mlp(width, depth, torch.float32)
    ops = chain_ops(model)
    t_prod = _best(lambda: _chain_jacobian(ops, x32), reps)
    # flops actually performed: the first layer's product with the identity is skipped
    prod_rate = 2 * (depth - 1) * n**3 / t_prod

    jac = _chain_jacobian(ops, x32)
    t_svd = _best(lambda: torch.linalg.svdvals(jac), reps)
    t_lower = depth * t_mm + t_svd
    t_ours = _best(lambda: jacobian_spectrum(model, x32, dtype=torch.float32, progress=False), reps)

    model64 = _mlp(width, depth, torch.float64)
    t_ours64 = _best(lambda: jacobian_spectrum(model64, x32.double(), progress=False), reps)

    def baseline():
        j = torch.autograd.functional.jacobian(model, x32[0])
        return torch.linalg.svdvals(j)

    t_base = _best(baseline, 1)
    ours = jacobian_spectrum(model, x32, dtype=torch.float32, progress=False).singular_values[0]
    ref = torch.linalg.svdvals(torch.autograd.functional.jacobian(model, x32[0])).numpy()
    agree = float(np.max(np.abs(ours - ref)) / ref.max())

    rows = [
        (
            "fp32 matmul rate (N×N @ N×N)",
            f"{rate / 1e9:.1f} GFLOP/s",
            f"{t_mm * 1e3:.1f} ms per matmul",
        ),
        (
            "chain product J ← D(WJ), fp32",
            f"{prod_rate / 1e9:.1f} GFLOP/s",
            f"{t_prod:.3f} s for {depth - 1} products (the first, with the identity, is a "
            f"transpose); {prod_rate / rate:.0%} of the matmul rate (target ≥ 50%)",
        ),
        ("svdvals (N×N, fp32)", "", f"{t_svd:.3f} s"),
        ("lower bound: L matmuls + one SVD", "", f"{t_lower:.3f} s"),
        (
            "jacobian_spectrum end to end, fp32",
            "",
            f"{t_ours:.3f} s = {t_ours / t_lower:.2f}× the lower bound (target ≤ 2×)",
        ),
        ("jacobian_spectrum end to end, float64 (default)", "", f"{t_ours64:.3f} s"),
        (
            "torch.autograd.functional.jacobian (default) + svdvals",
            "",
            f"{t_base:.3f} s = {t_base / t_ours:.1f}× ours (target ≥ 10×)",
        ),
        ("max abs(σ_ours − σ_autograd) / σ_max (fp32)", "", f"{agree:.1e}"),
    ]
    rows += _resnet_rows()
    for name, rate_s, detail in rows:
        print(f"{name:<58} {rate_s:>16}  {detail}")

    text = [
        "# Jacobian spectrum benchmark",
        "",
        f"Model: MLP, depth {depth}, width {width}, tanh; one input; "
        f"{'quick run' if args.quick else 'full run'}.",
        "Command: `python benchmarks/bench_jacobian.py" + (" --quick`" if args.quick else "`"),
        "",
        "| quantity | rate | time / ratio |",
        "|---|---|---|",
        *[f"| {a_} | {b_} | {c_} |" for a_, b_, c_ in rows],
        "",
        f"- machine: {machine()}",
        f"- {load_note(torch.get_num_threads())}.",
        f"- best of {reps} repeats (the autograd baseline: one run).",
        "",
    ]
    save_report(args.out, "\n".join(text))


if __name__ == "__main__":
    main()
