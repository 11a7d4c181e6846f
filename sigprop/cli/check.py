"""``sigprop check PATH``: layer collapse and effective sparsity of a saved checkpoint.

Exit status: 0 healthy; 1 a layer collapsed (every weight pruned, or no kept weight on an
input-output path; also when a skip bypasses it), the input is disconnected from the output,
or the probe found an output that does not depend on the input (with ``--strict``, also any
dead unit); 2 the file cannot be used (the reason in one line on stderr); 3 an internal
error (an exception other than sigprop's ``InvalidInput`` is a bug, not a verdict on the
file); 4 connectivity unknown (no graph: nothing collapsed, but no input-output path was
checked -- pass ``--arch`` for a state dict). ``healthy`` is never said without a graph.
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
            "arXiv 2107.02306). Exit 0: healthy; 1: collapse (bypassed by a skip or not), "
            "disconnection or an input-independent output (--probe); 2: the file cannot be "
            "used; 4: connectivity unknown (no graph: pass --arch for a state dict)."
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
    p.add_argument(
        "--arch",
        metavar="SPEC",
        help="architecture of a state dict: torchvision:NAME, timm:NAME or module.path:factory "
        "(built with random weights, nothing downloaded; the checkpoint is loaded into it "
        "strictly and checked with its real graph: skips, concatenations, attention)",
    )
    p.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="per-sample input shape for the exact weight-level effective sparsity (padding "
        "and feature-map sizes counted); default: the architecture's (224x224 for "
        "torchvision), else channel level only",
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="with a graph, also run the model on random inputs: does the output depend on "
        "the input, which channels are constant or zero",
    )
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=run)


#: exit status by verdict
EXIT = {
    "healthy": 0,
    "layer collapse": 1,
    "disconnected": 1,
    "collapsed but bypassed": 1,
    "input-independent": 1,
    "connectivity unknown": 4,
}
#: the JSON ``status`` by verdict ("collapsed" for every failing verdict but the bypass)
STATUS = {
    "healthy": "healthy",
    "layer collapse": "collapsed",
    "disconnected": "collapsed",
    "collapsed but bypassed": "collapsed but bypassed",
    "input-independent": "input-independent",
    "connectivity unknown": "connectivity unknown",
}


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """``"3,32,32"`` -> ``(3, 32, 32)``."""
    if text is None:
        return None
    from sigprop.validate import InvalidInput, positive_int

    parts = [p.strip() for p in str(text).replace("x", ",").split(",") if p.strip()]
    if not parts or not all(p.isdigit() for p in parts):
        raise InvalidInput(f"--input-shape must be positive integers like 3,32,32, got {text!r}")
    return tuple(positive_int(int(p), "--input-shape") for p in parts)


def run(args: argparse.Namespace) -> int:
    from sigprop.io import CheckpointError, load_checkpoint

    shape = parse_input_shape(getattr(args, "input_shape", None))
    arch = getattr(args, "arch", None)
    if arch is not None:
        from sigprop.nn.arch import parse_arch_spec

        parse_arch_spec(arch)  # a malformed spec fails before the file is read
    # load first: files rejected by their header never pay for importing torch
    ckpt = load_checkpoint(args.path, trust_pickle=args.trust_pickle, validate_values=False)
    from sigprop.cli import InternalError
    from sigprop.validate import InvalidInput

    try:
        # one pass over the data: check_collapse validates the layers it scans, this the rest
        ckpt.validate_values(skip_layers=True)
        from sigprop.diagnostics.collapse import check_collapse

        options = {"arch": arch, "input_shape": shape, "probe": getattr(args, "probe", False)}
        options = {k: v for k, v in options.items() if v}  # only what was asked for
        report = check_collapse(ckpt, progress=args.progress, **options)
    except CheckpointError:
        raise  # sigprop's verdict on the file: unusable (exit 2), message printable already
    except InvalidInput as exc:
        # the analysis' verdict on the file (exit 2); its message may quote names from the
        # file, so it is made printable like every CheckpointError
        raise CheckpointError(str(exc)) from None
    except ValueError as exc:  # from numpy/torch: a fault of the check, not of the file
        raise InternalError(f"{type(exc).__name__}: {exc}") from exc
    verdict = report.verdict
    code = EXIT[verdict]
    if code == 0 and args.strict and report.n_dead_units > 0:
        code = 1
    if args.json:
        payload = report.to_dict()
        payload["format"] = ckpt.format
        payload["layout"] = ckpt.layout
        payload["path"] = ckpt.path
        payload["status"] = STATUS[verdict] if code != 1 or verdict != "healthy" else "collapsed"
        print(json.dumps(payload, indent=2))
    else:
        print(format_report(report, ckpt.format, ckpt.layout, ckpt.path, strict_failed=code == 1))
    return code


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _status_line(report, strict_failed: bool) -> str:
    from sigprop.io import printable as p

    verdict = report.verdict
    if verdict == "healthy":
        return "status: DEAD UNITS (--strict)" if strict_failed else "status: healthy"
    if verdict == "layer collapse" and report.connected is None:
        return (
            "status: LAYER COLLAPSE (connectivity unknown: a skip may bypass it; --arch "
            "gives a state dict its real graph)"
        )
    if verdict in ("layer collapse", "disconnected"):
        return "status: LAYER COLLAPSE / DISCONNECTED"
    if verdict == "collapsed but bypassed":
        where = "; ".join(map(p, report.skips)) or "a parallel path"
        return f"status: COLLAPSED BUT BYPASSED ({where})"
    if verdict == "input-independent":
        return "status: INPUT-INDEPENDENT OUTPUT (connected, but the probe measured no dependence)"
    return "status: CONNECTIVITY UNKNOWN (no graph; pass --arch for a state dict)"


def format_report(report, fmt: str, layout: str, path: str, strict_failed: bool = False) -> str:
    """The human-readable table printed by ``sigprop check``.

    Every text that comes from the file (the path, layer names, notes) is printed through
    :func:`sigprop.io.printable`, so a key name carrying terminal escape sequences or line
    breaks cannot clear the screen or forge a line of the report. The last line is the one
    status line, which matches the JSON ``verdict``.
    """
    from sigprop.io import printable as p

    graph = report.effective_sparsity is not None
    rows = [("layer", "shape", "kept/total", "density", "effective", "dead units", "status")]
    for layer in report.layers:
        if layer.collapsed:
            status = "COLLAPSED"
        elif layer.effectively_collapsed and graph:
            status = "NO PATH"
        else:
            status = "ok"
        if layer.bypassed:
            status += " (bypassed)"
        if layer.constant_channels:
            status += f" {len(layer.constant_channels)} constant"
        dead = f"{layer.n_dead}/{layer.units}" if graph else "-"
        rows.append(
            (
                p(layer.name),
                "x".join(str(s) for s in layer.shape),
                f"{layer.kept}/{layer.total}",
                _pct(layer.density),
                _pct(layer.effective_density) if graph else "n/a",
                dead,
                status,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"{p(path)}: {fmt} ({layout}), graph: {p(report.graph)}"]
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines.append(
        f"sparsity            {_pct(report.sparsity)}  ({report.kept}/{report.total} kept)"
    )
    if report.effective_exact:
        shape = "x".join(map(str, report.input_shape))
        lines.append(
            f"effective sparsity  {_pct(report.effective_sparsity)}  (exact, input {shape})"
        )
        lines.append(
            f"  channel level     {_pct(report.channel_effective_sparsity)}  (lower bound)"
        )
    elif graph:
        lines.append(
            f"effective sparsity  {_pct(report.effective_sparsity)}  (channel level: a lower "
            "bound; --input-shape for the exact count)"
        )
    else:
        lines.append(f"effective sparsity  {_pct(report.effective_sparsity)}")
    if report.connected is None:
        lines.append("input->output path  not checked (no graph)")
    else:
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
    if report.bypassed_layers:
        lines.append(f"bypassed by         {'; '.join(map(p, report.skips)) or 'a parallel path'}")
    if report.probe is not None:
        pr = report.probe
        lines.append(
            f"probe               output spread {pr['output_spread']:.3g}, input-gradient norm "
            f"{pr['input_grad_norm']:.3g} over {pr['batch']} random inputs"
        )
    for note in report.notes:
        lines.append(f"note: {p(note)}")
    lines.append(_status_line(report, strict_failed))
    return "\n".join(lines)
