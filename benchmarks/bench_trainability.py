"""Benchmark: ``sigprop.diagnostics.trainability`` on a 20-layer MLP and torchvision ResNet-18.

Targets (issue 13): a 20-layer MLP in under 0.5 s and ResNet-18 in under 2 s on this
machine. Measured: the median wall time of the whole call (warm: the first call, which pays
for imports and caches, is reported separately), and, in the same run, one forward +
backward pass of the same batch through the model as the ratio's floor. The MLP is
64 → 100 × 19 → 10, tanh at the edge of chaos (σ_b = 0.05), random mask of density 0.1
(closed-form chain path); ResNet-18 is built with weights=None in train mode (graph engine
path, exact weight-level effective density), batch 32 at 3×32×32 and 3×224×224.

Usage: python benchmarks/bench_trainability.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _machine import load_note, machine, save_report

ROOT = Path(__file__).resolve().parent


def _timed(fn, repeats: int) -> tuple[float, float]:
    first = time.perf_counter()
    fn()
    first = time.perf_counter() - first
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def _fwd_bwd(model, x):
    import torch

    def run():
        out = model(x)
        torch.nn.functional.cross_entropy(out, torch.zeros(x.shape[0], dtype=torch.long)).backward()
        model.zero_grad(set_to_none=True)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 1 if args.quick else 5
    import torch

    from sigprop.diagnostics import trainability
    from sigprop.nn.arch import build_model
    from sigprop.nn.init import eoc_init_
    from sigprop.nn.models import mlp
    from sigprop.prune import prune_at_init

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    cases = []
    net = mlp(64, 100, 20, 10, "tanh", layer="masked")
    eoc_init_(net, "tanh", sigma_b=0.05, generator=0)
    prune_at_init(net, "random", 0.1, None, generator=0, progress=False)
    cases.append(("20-layer tanh MLP, density 0.1", net, torch.randn(32, 64, generator=gen), 0.5))
    resnet = build_model("torchvision:resnet18").train()
    for size in (32, 224):
        x = torch.randn(32, 3, size, size, generator=gen)
        cases.append((f"ResNet-18 train mode, 3×{size}×{size}", resnet, x, 2.0))
    rows = []
    for name, model, x, target in cases:
        first, warm = _timed(lambda model=model, x=x: trainability(model, x), repeats)
        _, floor = _timed(_fwd_bwd(model, x), repeats)
        rows.append((name, first, warm, floor, warm / floor, target))
        print(f"{name}: first {first:.3f} s, warm {warm:.3f} s, fwd+bwd {floor:.3f} s")
    lines = [
        "# trainability: prediction time of a 20-layer MLP and torchvision ResNet-18",
        "",
        f"Machine: {machine()}.",
        f"Load: {load_note()}.",
        "",
        f"`trainability(model, x)` with a batch of 32, median of {repeats} warm call(s) after "
        "a first call; the floor is one forward + backward of the same batch (cross entropy), "
        "measured back to back in this run.",
        "",
        "| model | first call (s) | warm (s) | fwd+bwd (s) | warm / fwd+bwd | target (s) | met |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, first, warm, floor, ratio, target in rows:
        lines.append(
            f"| {name} | {first:.3f} | {warm:.3f} | {floor:.3f} | {ratio:.1f} | < {target:g} "
            f"| {'yes' if warm < target else 'NO'} |"
        )
    save_report(ROOT / "results" / "trainability.md", "\n".join(lines))


if __name__ == "__main__":
    main()
