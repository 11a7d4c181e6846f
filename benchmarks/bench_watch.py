"""Overhead of ``sigprop.watch`` on a training step of the user's own loop (issue 14).

Target: at ``every=10`` the watcher costs <= 5 % of a training step.

Models and data (digits, 1438 training samples, batch 64, SGD momentum 0.9, lr 0.01):

* ``mlp``: tanh MLP 64 -> 256 x 5 -> 10 (6 dense weight layers, the bench_train model);
* ``conv``: the digits convnet (two 3x3 convolutions of 16 and 32 channels, ReLU, a linear
  readout) with sigprop masked layers at density 0.2 (so the mask snapshots and the
  collapse check are exercised).

Contenders, on identical copies of each model, timed in interleaved rounds in one process:

* ``plain``: the loop everyone writes (forward, cross-entropy, zero_grad, backward, step);
* ``watch``: the same loop with ``watch(model, dir, every=10, tensorboard=False)`` and
  ``w.step()`` after every optimiser step (JSON Lines log with its fsync thread, gradient
  and weight norms, q from forward hooks armed for one step in ten, densities);
* ``watch+tb``: the same with TensorBoard events and histograms (when tensorboard is
  installed);
* ``watch/1``: ``every=1`` (a record at every step), shown for scale.

The loop is timed from the first to the last step; creating the watcher (its step-0
record, the collapse check, importing TensorBoard) is a one-off reported separately. Each
round trains ``EPOCHS`` epochs per contender; the number reported is the median over rounds
of the time per step. torch runs on one thread. The logs go to a temporary folder on the
same disk as /tmp.

Run: ``python benchmarks/bench_watch.py [--quick]``; writes ``benchmarks/results/watch.md``.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _machine import load_note, machine, save_report
from torch import nn

from sigprop.experiments.data import load_dataset
from sigprop.nn.models import digits_convnet
from sigprop.watcher import watch

RESULTS = Path(__file__).resolve().parent / "results" / "watch.md"
BATCH, LR, EVERY = 64, 0.01, 10


def build_mlp(seed: int = 0) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    sizes = [64] + [256] * 5 + [10]
    layers: list[nn.Module] = []
    for i in range(6):
        lin = nn.Linear(sizes[i], sizes[i + 1])
        with torch.no_grad():
            lin.weight.normal_(0.0, 1.0 / math.sqrt(sizes[i]), generator=g)
            lin.bias.zero_()
        layers.append(lin)
        if i < 5:
            layers.append(nn.Tanh())
    return nn.Sequential(*layers)


def build_conv(seed: int = 0) -> nn.Sequential:
    net = digits_convnet(layer="masked", density=0.2, generator=seed)
    return nn.Sequential(nn.Unflatten(1, (1, 8, 8)), net)


def loop(model, ds, epochs: int, watcher=None, seed: int = 0) -> tuple[int, float, float, float]:
    """Train; return (steps, wall s, process CPU s, CPU s inside ``watcher.step()``)."""
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    x, y = ds.x_train, ds.y_train
    steps = 0
    model.train()
    start, cpu = time.perf_counter(), time.process_time()
    inside = 0.0
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], BATCH):
            idx = perm[i : i + BATCH]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if watcher is not None:
                t = time.process_time()
                watcher.step()
                inside += time.process_time() - t
            steps += 1
    if watcher is not None:
        inside += watcher.tensorboard_cpu_seconds  # its writer thread's share
    return steps, time.perf_counter() - start, time.process_time() - cpu, inside


def armed_forward_cost(model, ds, pairs: int) -> float:
    """Extra CPU seconds of a training step whose forward pass runs the q hooks (the one
    step in ``every`` before a record): median over interleaved armed/unarmed pairs."""
    from sigprop.watcher.layers import PreactivationProbe, watched_layers

    probe = PreactivationProbe(watched_layers(model))
    x, y = ds.x_train[:BATCH], ds.y_train[:BATCH]

    def one(armed: bool) -> float:
        if armed:
            probe.arm()
        t = time.process_time()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        if armed:
            probe.collect()
        return time.process_time() - t

    diffs = []
    for _ in range(pairs):
        diffs.append(one(True) - one(False))
    model.zero_grad(set_to_none=True)
    return statistics.median(diffs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer rounds")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rounds, epochs = (3, 2) if args.quick else (11, 3)
    has_tb = importlib.util.find_spec("tensorboard") is not None
    ds = load_dataset("digits", seed=0)
    models = {"mlp": build_mlp(), "conv": build_conv()}
    contenders = {"plain": None, "watch": {"every": EVERY, "tensorboard": False}}
    if has_tb:
        contenders["watch+tb"] = {"every": EVERY, "tensorboard": True}
    contenders["watch/1"] = {"every": 1, "tensorboard": False}

    tmp = tempfile.TemporaryDirectory(prefix="bench-watch-")
    runs = 0

    def run(model_name, contender):
        nonlocal runs
        model = copy.deepcopy(models[model_name])
        options = contenders[contender]
        if options is None:
            return loop(model, ds, epochs), 0.0
        runs += 1
        t0 = time.perf_counter()
        w = watch(model, Path(tmp.name) / f"{runs}", **options)
        setup = time.perf_counter() - t0
        try:
            return loop(model, ds, epochs, w), setup
        finally:
            w.close()

    for m in models:  # warm-up: allocator, kernels, imports
        for c in contenders:
            run(m, c)
    per_step = {(m, c): [] for m in models for c in contenders}
    cpu_step = {(m, c): [] for m in models for c in contenders}
    inside_step = {(m, c): [] for m in models for c in contenders}
    setups = {(m, c): [] for m in models for c in contenders}
    for _ in range(rounds):
        for m in models:
            for c in contenders:
                (steps, seconds, cpu, inside), setup = run(m, c)
                per_step[m, c].append(seconds / steps)
                cpu_step[m, c].append(cpu / steps)
                inside_step[m, c].append(inside / steps)
                setups[m, c].append(setup)
    tmp.cleanup()
    med = {k: statistics.median(v) for k, v in per_step.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu_step.items()}
    med_inside = {k: statistics.median(v) for k, v in inside_step.items()}
    hooks = {
        m: armed_forward_cost(copy.deepcopy(models[m]), ds, 21 if args.quick else 101)
        for m in models
    }

    lines = [
        "## sigprop.watch overhead (issue 14): the user's own loop with and without the watcher",
        "",
        f"Digits (1438 train), batch {BATCH}, SGD momentum 0.9; {epochs} epochs "
        f"({math.ceil(1438 / BATCH) * epochs} steps) per contender per round, {rounds} "
        "interleaved rounds, median time per step; torch threads: 1. `mlp`: tanh MLP 64 -> "
        "256 x 5 -> 10 (dense); `conv`: digits convnet 16/32 channels, sigprop masked layers "
        "at density 0.2. The watcher's creation (step-0 record, collapse check, TensorBoard "
        "import) is timed apart, as a one-off.",
        "",
        "Two measures. *End to end*: wall time per step (the user's wait) and the process's "
        "CPU time per step (all threads), each against `plain` in the same rounds; on a "
        "shared machine both move by several percent from round to round. *Direct*: the CPU "
        "time spent inside `w.step()` (records, hook arming; for `watch+tb` plus the "
        "TensorBoard writer thread's own CPU time), plus the extra CPU time of a forward "
        "and backward pass with the q hooks armed (one step in `every`; median over "
        "interleaved armed/unarmed pairs), as a share of `plain`'s CPU time per step: the "
        "watcher's own work, measured where it happens. The target is judged on the direct "
        "share when the load note below says *shared*, on wall time when it says *quiet*.",
        "",
        "| model | contender | wall ms / step | wall overhead | CPU ms / step | CPU overhead "
        "| direct share | watcher creation (ms) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    quiet = load_note(torch.get_num_threads()).endswith(
        "(quiet: no other job competed for the cores)"
    )
    verdicts = []
    for m in models:
        for c in contenders:
            over = med[m, c] / med[m, "plain"] - 1
            over_cpu = med_cpu[m, c] / med_cpu[m, "plain"] - 1
            every = contenders[c]["every"] if contenders[c] else 1
            direct = (med_inside[m, c] + hooks[m] / every) / med_cpu[m, "plain"]
            setup = statistics.median(setups[m, c]) * 1e3
            dash = c == "plain"

            def pct(v, dash=dash):
                return "—" if dash else f"{100 * v:+.1f} %"

            lines.append(
                f"| {m} | {c} | {1e3 * med[m, c]:.3f} | {pct(over)} "
                f"| {1e3 * med_cpu[m, c]:.3f} | {pct(over_cpu)} | {pct(direct)} "
                f"| {'—' if dash else f'{setup:.0f}'} |"
            )
            if c in ("watch", "watch+tb"):
                verdicts.append((m, c, over if quiet else direct))
    lines.append("")
    for m in models:
        lines.append(
            f"- {m}: an armed forward + backward costs {1e3 * hooks[m]:.3f} ms CPU more than "
            f"an unarmed one ({100 * hooks[m] / med_cpu[m, 'plain']:.1f} % of a step, paid "
            f"one step in {EVERY})"
        )
    lines.append("")
    worst = max(v for *_, v in verdicts)
    lines.append(
        f"Target: every=10 costs <= 5 % of a step ({'wall time' if quiet else 'direct share'}): "
        f"worst {100 * worst:+.1f} % ("
        + ", ".join(f"{m} {c} {100 * v:+.1f} %" for m, c, v in verdicts)
        + f") — {'meets' if worst <= 0.05 else 'MISSES'} the target."
    )
    if not has_tb:
        lines.append("TensorBoard is not installed here: `watch+tb` was not measured.")
    lines += [
        "`watch/1` records at every step (shown for scale, not part of the target).",
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
