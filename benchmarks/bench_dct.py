"""DCT-plus-sparse layer vs ``nn.Linear``: forward + backward cost, side by side.

Issue 3, Performance: batch 256, width 1024-4096, density 1e-1 .. 1e-4. Target: at width
4096 and density <= 1e-3 the DCT-plus-sparse layer (Price & Tanner, arXiv 2102.07655)
costs <= 0.25x the dense layer, and never more than 1.5x dense at any size.

For every (width, density) the dense layer and the DCT-plus-sparse layer in both storage
modes (``storage="dense"``, the default, with ``kernel="auto"`` plus the two kernels it
chooses between, ``"csr"`` and ``"dense"``; and ``storage="compact"`` with
``kernel="auto"``) are timed in interleaved rounds in the same process; the reported time
is the best over rounds (best-of-N: the least disturbed by other jobs on a shared machine)
of one forward + backward pass (gradients for the input and all parameters). A last table
times the fast DCT alone against the dense product with a materialised D.

Run: ``python benchmarks/bench_dct.py [--quick]``; writes ``benchmarks/results/dct.md``.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch
from _machine import load_note, machine, save_report

from sigprop.nn import DCTPlusSparseLinear, dct2, dct_matrix
from sigprop.nn.dct import _lazy_zeros

BATCH = 256


def _fwd_bwd(layer: torch.nn.Module, x: torch.Tensor, g: torch.Tensor) -> None:
    for p in layer.parameters():
        p.grad = None
    x.grad = None
    y = layer(x)
    y.backward(g)


def _time_rounds(fns: dict[str, callable], rounds: int) -> dict[str, float]:
    """Best (minimum) wall time of each function over ``rounds`` interleaved rounds (one
    warm-up)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def bench_layers(widths, densities, rounds: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for n in widths:
        x = torch.randn(BATCH, n, generator=gen, requires_grad=True)
        g = torch.randn(BATCH, n, generator=gen)
        dense = torch.nn.Linear(n, n)
        for density in densities:
            layers = {
                k: DCTPlusSparseLinear(n, n, density=density, sparse_std=1.0, generator=1, kernel=k)
                for k in ("auto", "csr", "dense")
            }
            layers["compact"] = DCTPlusSparseLinear(
                n, n, density=density, sparse_std=1.0, generator=1, storage="compact"
            )
            fns = {"nn.Linear": lambda m=dense, x=x, g=g: _fwd_bwd(m, x, g)}
            fns.update(
                {f"dct-{k}": (lambda m=m, x=x, g=g: _fwd_bwd(m, x, g)) for k, m in layers.items()}
            )
            t = _time_rounds(fns, rounds)
            row = {
                "width": n,
                "density": density,
                "nnz": layers["auto"].kept,
                "auto_kernel": "csr" if layers["auto"].uses_sparse_kernel() else "dense",
                **{f"t_{k}": v for k, v in t.items()},
            }
            row["ratio_auto"] = t["dct-auto"] / t["nn.Linear"]
            row["ratio_csr"] = t["dct-csr"] / t["nn.Linear"]
            row["ratio_dense"] = t["dct-dense"] / t["nn.Linear"]
            row["ratio_compact"] = t["dct-compact"] / t["nn.Linear"]
            rows.append(row)
            print(
                f"n={n:5d} density={density:.0e} nnz={row['nnz']:8d} "
                f"dense {t['nn.Linear'] * 1e3:8.2f} ms | auto({row['auto_kernel']}) "
                f"{t['dct-auto'] * 1e3:8.2f} ms = {row['ratio_auto']:.3f}x | csr "
                f"{row['ratio_csr']:.3f}x | dense-masked {row['ratio_dense']:.3f}x | compact "
                f"{t['dct-compact'] * 1e3:8.2f} ms = {row['ratio_compact']:.3f}x",
                flush=True,
            )
    return rows


def bench_dct_only(widths, rounds: int) -> list[dict]:
    rows = []
    gen = torch.Generator().manual_seed(0)
    for n in widths:
        x = torch.randn(BATCH, n, generator=gen, requires_grad=True)
        g = torch.randn(BATCH, n, generator=gen)
        d = dct_matrix(n, n, dtype=torch.float32)

        def fast(x=x, g=g, n=n):
            x.grad = None
            dct2(x, n).backward(g)

        def materialised(x=x, g=g, d=d):
            x.grad = None
            (x @ d.T).backward(g)

        def grad_buffer(n=n):
            torch.zeros(n, n)

        kept = torch.randperm(n * n, generator=gen)[: max(1, n * n // 1000)]
        kept_grad = torch.randn(kept.numel(), generator=gen)

        def lazy_scatter(n=n, kept=kept, kept_grad=kept_grad):
            _lazy_zeros(n * n, kept_grad).index_put_((kept,), kept_grad)

        t = _time_rounds(
            {
                "fast": fast,
                "materialised": materialised,
                "grad_buffer": grad_buffer,
                "lazy_scatter": lazy_scatter,
            },
            rounds,
        )
        rows.append({"width": n, **t, "ratio": t["fast"] / t["materialised"]})
        print(
            f"n={n:5d} fast DCT {t['fast'] * 1e3:.2f} ms vs x@D^T {t['materialised'] * 1e3:.2f} ms "
            f"= {rows[-1]['ratio']:.3f}x; torch.zeros(n, n) {t['grad_buffer'] * 1e3:.2f} ms; "
            f"lazily zeroed + scatter at 1e-3 {t['lazy_scatter'] * 1e3:.2f} ms",
            flush=True,
        )
    return rows


def _target_lines(rows, key: str) -> list[str]:
    width = max(r["width"] for r in rows)
    big = [r for r in rows if r["width"] == width and r["density"] <= 1e-3]
    worst = max(rows, key=lambda r: r[key])
    met_big = bool(big) and all(r[key] <= 0.25 for r in big)
    return [
        f"  - width {width}, density ≤ 1e-3: ≤ 0.25× dense — measured "
        + ", ".join(f"{r[key]:.3f}× (density {r['density']:.0e})" for r in big)
        + (" — **met**" if met_big else " — **not met**"),
        f"  - never > 1.5× dense: worst {worst[key]:.3f}× (width {worst['width']}, density "
        f"{worst['density']:.0e}) — " + ("**met**" if worst[key] <= 1.5 else "**not met**"),
    ]


def write_markdown(path: Path, rows, dct_rows, quick: bool, wall: float) -> None:
    lines = [
        "# DCT-plus-sparse layer vs nn.Linear (forward + backward)",
        "",
        f"Generated by `python benchmarks/bench_dct.py{' --quick' if quick else ''}` on "
        f"{datetime.date.today().isoformat()} ({wall:.0f} s).",
        "",
        f"- machine: {machine()}",
        f"- {load_note(torch.get_num_threads())}; all variants were timed in interleaved "
        "rounds so they saw the same load, and each time is the best of the rounds "
        "(best-of-N).",
        f"- batch {BATCH}, square layers (width × width), float32, CPU; best of interleaved "
        "rounds of one forward + backward pass (input and all parameter gradients).",
        '- `storage="dense"` (the default; S is a dense masked `weight` parameter that '
        "`sigprop.prune` can re-mask): `auto` is the layer's default kernel choice (CSR "
        "`torch.sparse.mm` + `sampled_addmm` for S, or the dense masked product); `csr` and "
        "`dense-masked` force one kernel.",
        '- `storage="compact"` (kernel `auto`): S\'s kept entries are one length-nnz '
        "parameter on a fixed support, so the backward pass produces nnz gradients instead "
        "of a dense width × width gradient.",
        "",
        "| width | density | nnz(S) | nn.Linear (ms) | dense storage, auto (ms) | auto kernel "
        "| auto / dense | csr / dense | dense-masked / dense | compact (ms) "
        "| **compact / dense** |",
        "|---:|---:|---:|---:|---:|:---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['width']} | {r['density']:.0e} | {r['nnz']} | {r['t_nn.Linear'] * 1e3:.2f} | "
            f"{r['t_dct-auto'] * 1e3:.2f} | {r['auto_kernel']} | {r['ratio_auto']:.3f} | "
            f"{r['ratio_csr']:.3f} | {r['ratio_dense']:.3f} | {r['t_dct-compact'] * 1e3:.2f} | "
            f"**{r['ratio_compact']:.3f}** |"
        )
    lines += [
        "",
        "Targets (issue 3):",
        "",
        "- compact storage:",
        *_target_lines(rows, "ratio_compact"),
        "- dense storage (default), auto kernel:",
        *_target_lines(rows, "ratio_auto"),
        "",
        "## Fast DCT alone vs the materialised D",
        "",
        "`dct2` (N-point real FFT, Makhoul 1980) vs `x @ D.T` with D materialised, forward + "
        "backward, batch 256:",
        "",
        "| width | fast DCT (ms) | x @ Dᵀ (ms) | ratio | torch.zeros(n, n) (ms) "
        "| lazily zeroed n×n + scatter of n²/1000 (ms) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in dct_rows:
        lines.append(
            f"| {r['width']} | {r['fast'] * 1e3:.2f} | {r['materialised'] * 1e3:.2f} | "
            f"{r['ratio']:.3f} | {r['grad_buffer'] * 1e3:.2f} | {r['lazy_scatter'] * 1e3:.2f} |"
        )
    lines += [
        "",
        "The last two columns are the dense gradient of a dense-storage layer's n × n "
        "`weight`, which every backward pass produces: allocated and filled by `torch.zeros` "
        "(page-fault bound on this machine), or, as the layer does on the CPU with the CSR "
        "kernel, allocated lazily zeroed by `calloc` (`sigprop.nn.dct._lazy_zeros`) with only "
        "the kept entries' gradients scattered into it. Compact storage produces no dense "
        "gradient; its cost at low density is essentially that of the fast DCT.",
    ]
    save_report(path, "\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="two widths, two densities, 3 rounds")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the cores are shared with other jobs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).parent / "results" / "dct.md",
        help="markdown file",
    )
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.quick:
        widths, densities, rounds = (1024, 4096), (1e-1, 1e-3), 3
    else:
        widths, densities, rounds = (1024, 2048, 4096), (1e-1, 1e-2, 1e-3, 1e-4), 7
    rows = bench_layers(widths, densities, rounds)
    dct_rows = bench_dct_only(widths, rounds)
    write_markdown(args.out, rows, dct_rows, args.quick, time.perf_counter() - start)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
