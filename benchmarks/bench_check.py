"""Benchmark: ``sigprop check`` on a generated 1 GiB checkpoint, against a naive full
``torch.load``.

Target (issue 4, Performance, second bullet): ``sigprop check`` finishes in under 10 s with
a peak resident set under 1.5x the file size.

The checkpoint is a ``torch.nn.utils.prune`` state dict (``<name>_orig`` plus a float 0/1
``<name>_mask`` per layer, as ``torch.save(model.state_dict())`` writes it) of an MLP of
square float32 layers pruned at random to density 0.2; its size is 1 GiB (``--quick``:
128 MiB). It is generated in a temporary directory and deleted afterwards. A safetensors
copy of the same tensors is checked too.

Each contender runs in its own subprocess, started fresh; the parent measures wall time,
and the child reports its own peak resident set (``VmHWM`` from ``/proc/self/status`` at
exit; unlike ``ru_maxrss`` of a child it does not include the forking parent's memory):

* ``sigprop check FILE --json`` (safe load with ``weights_only=True, mmap=True``, value
  validation, per-layer scan, reachability, effective sparsity);
* naive: ``torch.load(FILE, weights_only=True)`` (everything read into memory) followed by
  the cheapest useful summary, kept counts per layer (``mask.sum()``);
* ``python -c "import torch"``: the interpreter + torch floor both pay.

The file is read once before timing, so both contenders start with it in the page cache
(the fair comparison on a machine with enough RAM; a cold read adds disk time to both).
Each contender runs ``REPEATS`` times, interleaved; the median is reported.

Usage: ``python benchmarks/bench_check.py [--quick]``; writes benchmarks/results/check.md.

``--resnet50`` instead times ``sigprop check`` on a torchvision ResNet-50 state dict (weights
random, pruned at random to density 0.1, 98 MiB; issue 11, Speed: under 3 s end to end with
``--arch``): with ``--arch torchvision:resnet50`` (exact weight-level effective sparsity at
the default 224x224 and at 32x32), without it (no graph: connectivity unknown), the same
tensors as safetensors, and the floors every run pays (``import torch``; importing
torchvision, which ``--arch torchvision:`` needs). Writes benchmarks/results/check_resnet50.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _machine import load_note, machine, save_report

RESULTS = Path(__file__).resolve().parent / "results" / "check.md"
RESULTS_R50 = Path(__file__).resolve().parent / "results" / "check_resnet50.md"
REPEATS = 3

NAIVE = """
import sys, torch
sd = torch.load(sys.argv[1], weights_only=True)
kept = {k: int(v.sum()) for k, v in sd.items() if k.endswith("_mask")}
print(sum(kept.values()))
"""


def make_checkpoint(path: Path, target_bytes: int, width: int, seed: int = 0) -> tuple[int, int]:
    """Write a pruned-MLP state dict of about ``target_bytes``; return (layers, bytes)."""
    g = torch.Generator().manual_seed(seed)
    per_layer = 2 * 4 * width * width  # weight_orig + float mask, float32
    n_layers = max(2, round(target_bytes / per_layer))
    sd = {}
    for i in range(n_layers):
        sd[f"layers.{i}.weight_orig"] = torch.randn(width, width, generator=g)
        sd[f"layers.{i}.weight_mask"] = (torch.rand(width, width, generator=g) < 0.2).float()
        sd[f"layers.{i}.bias"] = torch.zeros(width)
    torch.save(sd, path)
    from safetensors.torch import save_file

    save_file(sd, path.with_suffix(".safetensors"))
    del sd
    return n_layers, path.stat().st_size


#: Runs a module (``-m``) or code (``-c``) and reports the process's own peak resident set
#: (``VmHWM``, which exec resets, so the benchmark parent's memory does not leak in).
WRAPPER = """
import atexit, runpy, sys
def _hwm():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                sys.stderr.write("@@VMHWM %d\\n" % (int(line.split()[1]) * 1024))
atexit.register(_hwm)
mode, target = sys.argv[1], sys.argv[2]
if mode == "-m":
    sys.argv = [target] + sys.argv[3:]
    runpy.run_module(target, run_name="__main__", alter_sys=True)
else:
    sys.argv = ["-c"] + sys.argv[3:]
    exec(compile(target, "<bench>", "exec"), {"__name__": "__main__"})
"""


def run_child(argv: list[str]) -> tuple[float, float, int, str, str]:
    """(wall s, peak RSS bytes, exit status, stdout, stderr) of one fresh subprocess."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", WRAPPER, *argv], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t0
    peaks = [line.split()[1] for line in proc.stderr.splitlines() if line.startswith("@@VMHWM")]
    if not peaks or proc.returncode not in (0, 1, 4):  # 4: connectivity unknown
        raise RuntimeError(f"child {argv[:2]} failed (rc={proc.returncode}): {proc.stderr[-800:]}")
    return wall, float(peaks[-1]), proc.returncode, proc.stdout, proc.stderr


def make_resnet50(path: Path, density: float = 0.1, seed: int = 0) -> int:
    """A torchvision ResNet-50 state dict (random weights) pruned at random to ``density``,
    as a plain torch.save file and as safetensors; returns the torch.save size in bytes."""
    from sigprop.nn.arch import build_model

    torch.manual_seed(seed)
    model = build_model("torchvision:resnet50")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                m.weight.mul_(torch.rand(m.weight.shape, generator=g) < density)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(sd, path)
    from safetensors.torch import save_file

    save_file(sd, path.with_suffix(".safetensors"))
    return path.stat().st_size


def main_resnet50() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sigprop-bench-check-r50-"))
    try:
        path = tmp / "resnet50.pt"
        size = make_resnet50(path)
        st = path.with_suffix(".safetensors")
        check = ["-m", "sigprop", "check"]
        arch = ["--arch", "torchvision:resnet50", "--json"]
        contenders = {
            "check --arch (exact, 3x224x224)": [*check, str(path), *arch],
            "check --arch --input-shape 3,32,32": [
                *check,
                str(path),
                *arch,
                "--input-shape",
                "3,32,32",
            ],
            "check, no --arch (torch.save)": [*check, str(path), "--json"],
            "check, no --arch (safetensors)": [*check, str(st), "--json"],
            "import torch only": ["-c", "import torch"],
            "import torch + torchvision": [
                "-c",
                "from sigprop.nn.arch import import_torchvision; import_torchvision()",
            ],
        }
        samples: dict[str, list[float]] = {k: [] for k in contenders}
        info: dict[str, str] = {}
        for r in range(REPEATS):
            for name, argv in contenders.items():
                wall, rss, rc, out, err = run_child(argv)
                samples[name].append(wall)
                print(f"  [{r + 1}/{REPEATS}] {name:38s} {wall:6.2f} s  {rss / 2**20:6.0f} MiB")
                if name.startswith("check") and r == 0:
                    import json

                    d = json.loads(out)
                    info[name] = (
                        f"status {d['status']}, graph {d['graph']}, effective sparsity "
                        f"{d['effective_sparsity']}, exact {d.get('effective_exact')}"
                    )
        med = {k: statistics.median(v) for k, v in samples.items()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    lines = [
        "## `sigprop check` on a torchvision ResNet-50 state dict (issue 11, Speed)",
        "",
        f"- file: ResNet-50 state dict, random weights pruned at random to density 0.1, "
        f"{size / 2**20:.0f} MiB; the same tensors as safetensors",
        f"- machine: {machine()}; {load_note()}",
        f"- each run a fresh subprocess, file in the page cache, median of {REPEATS}",
        "",
        "| contender | wall (s) | result |",
        "|---|---:|---|",
    ]
    for name, t in med.items():
        lines.append(f"| {name} | {t:.2f} | {info.get(name, '')} |")
    lines += [
        "",
        f"- with `--arch`, minus the torch + torchvision import floor: "
        f"{med['check --arch (exact, 3x224x224)'] - med['import torch + torchvision']:.2f} s "
        "(build, strict load, capture, channel-level and exact reachability)",
        f"- target (< 3 s end to end with `--arch`): **"
        f"{'met' if med['check --arch (exact, 3x224x224)'] < 3 else 'NOT met'}**",
        "",
    ]
    text = "\n".join(lines)
    save_report(RESULTS_R50, text)
    print()
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB file instead of 1 GiB")
    parser.add_argument(
        "--resnet50", action="store_true", help="time a ResNet-50 state dict check instead"
    )
    args = parser.parse_args()
    if args.resnet50:
        main_resnet50()
        return
    target = (128 if args.quick else 1024) * 2**20
    width = 2048 if args.quick else 4096

    tmp = Path(tempfile.mkdtemp(prefix="sigprop-bench-check-"))
    free = shutil.disk_usage(tmp).free
    if free < 3 * target:
        raise SystemExit(
            f"need {3 * target / 2**30:.1f} GiB free in {tmp}, have {free / 2**30:.1f}"
        )
    try:
        path = tmp / "pruned.pt"
        print(f"generating {target / 2**20:.0f} MiB checkpoint in {tmp} ...", flush=True)
        n_layers, size = make_checkpoint(path, target, width)
        st_path = path.with_suffix(".safetensors")
        for p in (path, st_path):  # warm the page cache for every contender alike
            with open(p, "rb") as f:
                while f.read(1 << 24):
                    pass
        contenders = {
            "sigprop check (torch.save)": ["-m", "sigprop", "check", str(path), "--json"],
            "sigprop check (safetensors)": ["-m", "sigprop", "check", str(st_path), "--json"],
            "naive torch.load + mask sums": ["-c", NAIVE, str(path)],
            "import torch only": ["-c", "import torch"],
        }
        samples: dict[str, list[tuple[float, float]]] = {k: [] for k in contenders}
        statuses: dict[str, int] = {}
        for r in range(REPEATS):
            for name, argv in contenders.items():
                wall, rss, rc, out, err = run_child(argv)
                samples[name].append((wall, rss))
                statuses[name] = rc
                print(
                    f"  [{r + 1}/{REPEATS}] {name:30s} {wall:6.2f} s  {rss / 2**20:7.0f} MiB  rc={rc}"
                )
                if name.startswith("sigprop check") and r == 0:
                    import json

                    if not out.strip():
                        raise RuntimeError(f"{name}: no output; stderr: {err[-800:]}")
                    d = json.loads(out)
                    print(
                        f"      layers={len(d['layers'])} sparsity={d['sparsity']:.4f} "
                        f"effective={d['effective_sparsity']:.4f} status={d['status']}"
                    )
        med = {
            k: (statistics.median(w for w, _ in v), statistics.median(m for _, m in v))
            for k, v in samples.items()
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    check_t, check_m = med["sigprop check (torch.save)"]
    st_t, st_m = med["sigprop check (safetensors)"]
    naive_t, naive_m = med["naive torch.load + mask sums"]
    floor_t, floor_m = med["import torch only"]
    lines = [
        "## `sigprop check` on a generated checkpoint (issue 4, Performance)",
        "",
        f"- file: `torch.nn.utils.prune` state dict of {n_layers} layers of {width}x{width} "
        f"float32 (`weight_orig` + float `weight_mask` + bias), random density 0.2, "
        f"**{size / 2**30:.3f} GiB** ({size} bytes); the same tensors as safetensors",
        f"- machine: {machine()}; {load_note()}",
        f"- each contender in a fresh subprocess, file already in the page cache, median of "
        f"{REPEATS} interleaved runs; peak RSS = the child's own `VmHWM` (/proc/self/status, read at exit)",
        "",
        "| contender | wall (s) | peak RSS (MiB) | peak RSS / file size | exit |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (t, m) in med.items():
        lines.append(f"| {name} | {t:.2f} | {m / 2**20:.0f} | {m / size:.2f} | {statuses[name]} |")
    lines += [
        "",
        f"- time: check / naive = **{check_t / naive_t:.2f}x**; check minus the torch import "
        f"floor: {check_t - floor_t:.2f} s (naive: {naive_t - floor_t:.2f} s)",
        f"- memory: check / naive = **{check_m / naive_m:.2f}x**; check's peak RSS is "
        f"{check_m / size:.2f}x the file size (target < 1.5x), "
        f"{(check_m - floor_m) / 2**20:.0f} MiB above the bare torch import",
        f"- safetensors: {st_t:.2f} s, {st_m / size:.2f}x the file size",
        f"- target (< 10 s, < 1.5x file size): "
        f"**{'met' if check_t < 10 and check_m < 1.5 * size else 'NOT met'}**",
        "",
        "How: `torch.load(weights_only=True, mmap=True)` keeps tensor data in the file; every "
        "layer is streamed in row blocks of 4M elements, and the pages of a block are handed "
        "back to the kernel (`madvise(MADV_DONTNEED)` on the private read-only mapping) once "
        "it has been validated and counted, so the resident set holds torch, the per-layer "
        "(out x in) connectivity counts and one block, not the file.",
        "",
    ]
    text = "\n".join(lines)
    if args.quick:
        text = text.replace("## `sigprop check`", "## (quick run) `sigprop check`", 1)
        text += (
            "\n(--quick: the targets are stated for a 1 GiB file; at 128 MiB the bare torch "
            "import alone exceeds 1.5x the file size.)\n"
        )
    save_report(RESULTS, text)
    print()
    print(text)


if __name__ == "__main__":
    main()
