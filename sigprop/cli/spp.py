"""``sigprop spp MODEL``: Brock et al.'s signal-propagation plot, theory against measurement.

MODEL is ``torchvision:NAME`` or ``timm:NAME`` (built with random weights, nothing
downloaded), ``module.path:factory`` (the user's code: imported only with
``--allow-import``), or, with ``--arch SPEC``, a checkpoint file whose state dict is loaded
into that architecture (read safely by :func:`sigprop.io.load_checkpoint`, never unpickled;
loaded as ``sigprop check --arch`` loads it). Optionally pruned at initialisation
(``--density RHO --method M``), the model runs on one batch of iid N(0, 1) inputs: the graph
engine's prediction (``describe`` + ``predict(spec, q0=1)``) against the hooks' measurement
(``measure``), per residual block (or per weight layer of a chain) and per weight layer for
the gradient flow, drawn by :func:`sigprop.plotting.plot_signal_propagation`.

Exit status: 0 the plot was written; 2 unusable input (spec, shape, method, density, file;
one line on stderr); 3 an internal error (the graph engine failing on its own translation of
the model included).
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def register(subparsers) -> None:
    from sigprop.cli.models import add_model_options

    p = subparsers.add_parser(
        "spp",
        help="signal-propagation plot of an architecture: theory vs measurement",
        description=(
            "Signal-propagation plot (Brock et al. 2021, arXiv 2101.08692, Sec. 3) of MODEL: "
            "per residual block (or weight layer) the average channel squared mean, channel "
            "variance and residual-branch variance, the graph engine's prediction as lines "
            "over the measurement on one batch of iid N(0, 1) inputs, and the weight-gradient "
            "flow. Exit 0: plot written; 2: unusable input."
        ),
    )
    add_model_options(p)
    p.add_argument("--input-shape", required=True, metavar="C,H,W", help="per-sample shape")
    p.add_argument(
        "--train-mode",
        action="store_true",
        help="BatchNorm batch statistics and dropout on (default: eval mode)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="PNG file to write")
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=run)


def _options(args):
    """Everything checkable before torch is imported."""
    from sigprop.cli.check import parse_input_shape
    from sigprop.cli.models import check_model_options

    shape = parse_input_shape(args.input_shape)
    check_model_options(args)
    return shape


def run(args: argparse.Namespace) -> int:
    shape = _options(args)
    timings = {}
    t0 = time.perf_counter()
    import torch

    from sigprop.cli.models import build_or_load, prune_for_cli
    from sigprop.validate import InvalidInput

    model, path = build_or_load(args.model, args.arch, args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.batch, *shape, generator=gen)
    model.eval()
    try:  # two samples say whether the shape fits (and the output width, for labels)
        with torch.no_grad():
            out = model(x[:2])
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise InvalidInput(
            f"the model cannot run on inputs of shape {tuple(shape)}: {str(exc)[:200]}"
        ) from None
    out = out[0] if isinstance(out, (tuple, list)) else out
    timings["build_s"] = time.perf_counter() - t0
    notes = []
    if args.density is not None:
        t = time.perf_counter()
        notes.append(prune_for_cli(model, args.method, args.density, x, out, args.seed))
        timings["prune_s"] = time.perf_counter() - t
    model.train(bool(args.train_mode))
    from sigprop.diagnostics import describe, measure, predict
    from sigprop.plotting.spp import plot_signal_propagation, signal_propagation_records

    t = time.perf_counter()
    spec = describe(model, x)
    timings["describe_s"] = time.perf_counter() - t
    if spec.graph is None:
        raise InvalidInput(
            "the model cannot be traced into a graph (torch.fx): "
            + "; ".join(map(str, spec.unmapped))[:300]
        )
    t = time.perf_counter()
    try:
        pred = predict(spec, q0=1.0)
    except InvalidInput as exc:  # the engine on sigprop's own translation: not the user's input
        from sigprop.cli import InternalError

        raise InternalError(f"the graph engine cannot propagate this model: {exc}") from exc
    timings["predict_s"] = time.perf_counter() - t
    t = time.perf_counter()
    # the per-module records (the plot) only: one forward and one backward pass
    meas = measure(model, x, spec=spec, dtype=torch.float32, seed=args.seed, layers=False)
    timings["measure_s"] = time.perf_counter() - t
    parts = spec.graph.block_parts
    rec = signal_propagation_records(pred, meas, block_parts=parts)
    t = time.perf_counter()
    name = args.arch if args.arch else args.model
    mode = "train" if args.train_mode else "eval"
    title = f"{name}  input {','.join(map(str, shape))}  batch {args.batch}  {mode} mode"
    if args.density is not None:
        title += f"  {args.method} density {args.density:g}"
    written = plot_signal_propagation(pred, meas, args.out, records=rec, title=title)
    timings["plot_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    unmapped = list(spec.graph.describe_unmapped())
    unreached = list(pred.unreachable)
    if args.json:
        from sigprop._json import to_jsonable

        payload = {
            "model": name,
            "checkpoint": path,
            "input_shape": list(shape),
            "batch": args.batch,
            "seed": args.seed,
            "mode": mode,
            "density": args.density,
            "method": args.method,
            "out": str(written),
            **rec,
            "unmapped": unmapped,
            "unreached": unreached,
            "notes": notes + list(pred.notes),
            "timings": timings,
        }
        print(json.dumps(to_jsonable(payload), indent=2, allow_nan=False))
    else:
        print(_format(rec, notes, unmapped, unreached, written, timings))
    if unmapped or unreached or rec["missing"]:
        print(
            f"sigprop spp: {len(unmapped)} unmapped, {len(unreached)} unreached modules, "
            f"{len(rec['missing'])} rows without a record (listed in the output)",
            file=sys.stderr,
        )
    return 0


def _g(x) -> str:
    return "-" if x is None else f"{x:.4g}"


def _format(rec, notes, unmapped, unreached, written, timings) -> str:
    from sigprop.io import printable as p

    head = (rec["unit"], "q pred", "q meas", "rel err", "sq mean p/m", "ch var p/m", "branch p/m")
    rows = [head]
    for r in rec["rows"]:
        pr, me = r["predicted"], r["measured"]
        rows.append(
            (
                p(r["name"]),
                _g(pr["q"]),
                _g(me["q"]),
                _g(r["q_rel_err"]),
                f"{_g(pr['avg_sq_ch_mean'])}/{_g(me['avg_sq_ch_mean'])}",
                f"{_g(pr['avg_ch_var'])}/{_g(me['avg_ch_var'])}",
                f"{_g(pr['branch_var'])}/{_g(me['branch_var'])}" if r["branch"] else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append(f"median relative error of q: {_g(rec['q_median_rel_err'])}")
    for m in rec["missing"]:
        lines.append(f"no {m['lacks']} record: {p(m['name'])}")
    for u in unmapped:
        lines.append(f"unmapped: {p(u)}")
    if unreached:
        lines.append("not reached by the engine: " + ", ".join(map(p, unreached)))
    lines.extend(f"note: {n}" for n in notes)
    lines.append(f"wrote {p(str(written))} in {timings['total_s']:.1f} s")
    return "\n".join(lines)
