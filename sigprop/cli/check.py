"""``sigprop check PATH``: layer collapse and effective sparsity of a saved checkpoint.

Exit status: 0 healthy; 1 a layer collapsed (every weight pruned, or no kept weight on an
input-output path) or the input is disconnected from the output (with ``--strict``, also any
dead unit); 2 the file cannot be used (the reason in one line on stderr); 3 an internal
error (an exception other than sigprop's ``InvalidInput`` is a bug, not a verdict on the file).
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check",
        help="layer collapse, dead units and effective sparsity of a checkpoint",
        description=(
            "Read a checkpoint safely (state dict, torch.nn.utils.prune state dict, "
            "safetensors, torch.export .pt2) and report per-layer density, fully pruned "
            "layers, dead units, sparsity and effective sparsity (Vysogorets & Kempe, "
            "arXiv 2107.02306). Exit 0: healthy; 1: collapse or disconnection; "
            "2: the file cannot be used."
        ),
    )
    p.add_argument("path", metavar="PATH", help="checkpoint file")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow unpickling arbitrary objects (full nn.Module files, .pt2 archives with "
        "pickled parts); runs code from the file, use only for files you trust",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="also exit 1 when any hidden or output unit has no way in or no way out",
    )
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sigprop.io import CheckpointError, load_checkpoint

    # load first: files rejected by their header never pay for importing torch
    ckpt = load_checkpoint(args.path, trust_pickle=args.trust_pickle, validate_values=False)
    from sigprop.cli import InternalError
    from sigprop.validate import InvalidInput

    try:
        # one pass over the data: check_collapse validates the layers it scans, this the rest
        ckpt.validate_values(skip_layers=True)
        from sigprop.diagnostics.collapse import check_collapse

        report = check_collapse(ckpt, progress=args.progress)
    except CheckpointError:
        raise  # sigprop's verdict on the file: unusable (exit 2), message printable already
    except InvalidInput as exc:
        # the analysis' verdict on the file (exit 2); its message may quote names from the
        # file, so it is made printable like every CheckpointError
        raise CheckpointError(str(exc)) from None
    except ValueError as exc:  # from numpy/torch: a fault of the check, not of the file
        raise InternalError(f"{type(exc).__name__}: {exc}") from exc
    failed = not report.healthy or (args.strict and report.n_dead_units > 0)
    if args.json:
        payload = report.to_dict()
        payload["format"] = ckpt.format
        payload["layout"] = ckpt.layout
        payload["path"] = ckpt.path
        payload["status"] = "collapsed" if failed else "healthy"
        print(json.dumps(payload, indent=2))
    else:
        print(format_report(report, ckpt.format, ckpt.layout, ckpt.path))
    return 1 if failed else 0


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def format_report(report, fmt: str, layout: str, path: str) -> str:
    """The human-readable table printed by ``sigprop check``.

    Every text that comes from the file (the path, layer names, notes) is printed through
    :func:`sigprop.io.printable`, so a key name carrying terminal escape sequences or line
    breaks cannot clear the screen or forge a line of the report.
    """
    from sigprop.io import printable as p

    rows = [("layer", "shape", "kept/total", "density", "effective", "dead units", "status")]
    for layer in report.layers:
        if layer.collapsed:
            status = "COLLAPSED"
        elif layer.effectively_collapsed and report.effective_sparsity is not None:
            status = "NO PATH"
        else:
            status = "ok"
        dead = f"{layer.n_dead}/{layer.units}" if report.effective_sparsity is not None else "-"
        rows.append(
            (
                p(layer.name),
                "x".join(str(s) for s in layer.shape),
                f"{layer.kept}/{layer.total}",
                _pct(layer.density),
                _pct(layer.effective_density) if report.effective_sparsity is not None else "n/a",
                dead,
                status,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{p(path)}: {fmt} ({layout})"]
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        f"sparsity            {_pct(report.sparsity)}  ({report.kept}/{report.total} kept)"
    )
    lines.append(f"effective sparsity  {_pct(report.effective_sparsity)}")
    if report.connected is not None:
        lines.append(f"input->output path  {'yes' if report.connected else 'NO'}")
        lines.append(
            f"dead units          {report.n_dead_units} hidden/output, "
            f"{len(report.dead_inputs)}/{report.input_units} inputs without a way out"
        )
    if report.collapsed_layers:
        lines.append(f"collapsed layers    {', '.join(map(p, report.collapsed_layers))}")
    if report.effectively_collapsed_layers:
        names = ", ".join(map(p, report.effectively_collapsed_layers))
        lines.append(f"off-path layers     {names}")
    for note in report.notes:
        lines.append(f"note: {p(note)}")
    lines.append("status: " + ("healthy" if report.healthy else "LAYER COLLAPSE / DISCONNECTED"))
    return "\n".join(lines)
