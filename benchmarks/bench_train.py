"""Recorder overhead: sigprop's training loop with diagnostics against a plain torch loop.

Issue 5, Performance: a training step with diagnostics recording costs <= 1.2x a plain torch
loop on the same model.

Model and data: a tanh MLP (64 -> 256 x 5 -> 10, 6 weight layers) on the digits data
(1438 training samples), batch 64, SGD with momentum, 23 steps per epoch. Contenders, all
on identical copies of the model and timed in interleaved rounds in one process:

* ``plain``: the loop everyone writes — ``randperm`` shuffling with a local generator,
  forward, cross-entropy, ``zero_grad``, backward, ``step`` — plus one evaluation of the
  test set per epoch (``train`` does that too, so both do the same work);
* ``train``: :func:`sigprop.experiments.train.train` without recorders (its own overhead:
  mask bookkeeping, loss/accuracy accounting, divergence check, progress bar disabled);
* ``train+rec``: ``train`` with ``GradientNormRecorder(every=1)`` (per-layer weight-gradient
  norms at every step) and ``PreactivationRecorder(probe of 128 inputs, every=10)``
  (per-layer q^l) — the diagnostics setting the target refers to;
* ``train+rec/1``: the same with the pre-activation probe at *every* step (an extra forward
  pass of 128 inputs per step: the price of recording q^l that densely).

Each round runs ``EPOCHS`` epochs per contender; the reported number is the median over
rounds of the time per training step (total time / steps). torch runs on one thread so
that other processes on a shared machine disturb the ratio as little as possible.

Run: ``python benchmarks/bench_train.py [--quick]``; writes ``benchmarks/results/train.md``.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from pathlib import Path

import torch
from _machine import load_note, machine, save_report
from torch import nn

from sigprop.experiments.data import class_balanced_batch, load_dataset
from sigprop.experiments.recorders import GradientNormRecorder, PreactivationRecorder
from sigprop.experiments.train import train

RESULTS = Path(__file__).resolve().parent / "results" / "train.md"
WIDTH, DEPTH, BATCH, LR = 256, 6, 64, 0.01


def build(seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    sizes = [64] + [WIDTH] * (DEPTH - 1) + [10]
    layers: list[nn.Module] = []
    for i in range(DEPTH):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        with torch.no_grad():
            lin.weight.normal_(0.0, 1.0 / math.sqrt(sizes[i]), generator=g)
            lin.bias.zero_()
        layers.append(lin)
        if i < DEPTH - 1:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def plain_loop(model, ds, epochs: int, seed: int = 0) -> int:
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    x, y = ds.x_train, ds.y_train
    steps = 0
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], BATCH):
            idx = perm[i : i + BATCH]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        model.eval()
        with torch.no_grad():
            nn.functional.cross_entropy(model(ds.x_test), ds.y_test).item()
    return steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rounds, epochs = (3, 2) if args.quick else (9, 3)

    ds = load_dataset("digits", seed=0)
    probe, _ = class_balanced_batch(ds, 13, torch.Generator().manual_seed(0))
    probe = probe[:128]
    base = build()

    def run_train(recorders):
        def go():
            r = train(
                copy.deepcopy(base),
                ds,
                epochs=epochs,
                batch_size=BATCH,
                lr=LR,
                recorders=recorders(),
                progress=False,
            )
            return r.steps

        return go

    contenders = {
        "plain": lambda: plain_loop(copy.deepcopy(base), ds, epochs),
        "train": run_train(lambda: []),
        "train+rec": run_train(
            lambda: [GradientNormRecorder(every=1), PreactivationRecorder(probe, every=10)]
        ),
        "train+rec/1": run_train(
            lambda: [GradientNormRecorder(every=1), PreactivationRecorder(probe, every=1)]
        ),
    }
    for fn in contenders.values():  # warm-up: allocator, kernels, imports
        fn()
    per_step: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            t0 = time.perf_counter()
            steps = fn()
            per_step[name].append((time.perf_counter() - t0) / steps)
    med = {k: statistics.median(v) for k, v in per_step.items()}
    ratio = {k: med[k] / med["plain"] for k in med}

    lines = [
        "## Recorder overhead (issue 5): training step with diagnostics vs a plain torch loop",
        "",
        f"Model: tanh MLP 64 -> {WIDTH} x {DEPTH - 1} -> 10 ({DEPTH} weight layers), digits "
        f"(1438 train), batch {BATCH}, SGD momentum 0.9; {epochs} epochs per contender per "
        f"round, {rounds} interleaved rounds, median time per step; torch threads: 1.",
        "",
        "| contender | ms / step | ratio to plain |",
        "| --- | ---: | ---: |",
    ]
    for k in contenders:
        lines.append(f"| {k} | {1e3 * med[k]:.3f} | {ratio[k]:.3f} |")
    verdict = "meets" if ratio["train+rec"] <= 1.2 else "MISSES"
    lines += [
        "",
        f"Target: `train+rec` <= 1.2x plain: {ratio['train+rec']:.3f}x — {verdict} the target.",
        "`train+rec` = gradient norms of every layer at every step + pre-activation q^l on a "
        "128-input probe every 10 steps; `train+rec/1` probes at every step (an extra forward "
        "pass per step, shown for scale).",
        "",
        f"Machine: {machine()}{'; --quick' if args.quick else ''} "
        f"({load_note(torch.get_num_threads())}).",
        "",
    ]
    text = "\n".join(lines)
    save_report(RESULTS, text)
    print(text)


if __name__ == "__main__":
    main()
