"""``sigprop trainability MODEL``: will this (pruned) network train? The theory's answer.

MODEL is ``torchvision:NAME`` or ``timm:NAME`` (built with random weights, nothing
downloaded), ``module.path:factory`` (imported only with ``--allow-import``), or a
checkpoint file: a state dict (``torch.nn.utils.prune`` masks, zeros after ``prune.remove``,
safetensors; never unpickled) loaded into ``--arch SPEC``, or — only with
``--trust-pickle`` — a pickled whole module. Weights that are exactly zero count as pruned.
Optionally pruned at initialisation first (``--density RHO --method M``, on a random batch).
:func:`sigprop.diagnostics.trainability` then predicts from the mean-field theory, before
any training step, on iid N(0, 1) inputs of ``--input-shape``.

Exit status: 0 predicted to train; 1 predicted not to train; 2 unusable input (one line on
stderr); 3 an internal error.
"""

from __future__ import annotations

import argparse
import json
import math


def register(subparsers) -> None:
    from sigprop.cli.models import add_model_options

    p = subparsers.add_parser(
        "trainability",
        help="will this (pruned) network train? the theory's prediction before training",
        description=(
            "Predict from mean-field signal propagation whether MODEL trains: correlation "
            "and gradient depth in e-folds, finite fan-in, layer collapse and effective "
            "density combined by a documented rule (sigprop.diagnostics.trainability). "
            "Exit 0: predicted to train; 1: predicted not to train; 2: unusable input."
        ),
    )
    add_model_options(p, "with --arch (state dict) or --trust-pickle (whole module)")
    p.add_argument(
        "--trust-pickle",
        action="store_true",
        help="MODEL is a pickled nn.Module file: unpickling runs code from the file, use only "
        "for files you trust",
    )
    p.add_argument(
        "--input-shape",
        metavar="C,H,W",
        help="per-sample input shape (default 3,224,224 for torchvision/timm image models; "
        "an MLP's is read from its first layer)",
    )
    p.add_argument(
        "--depth-budget",
        type=float,
        metavar="B",
        help="e-folds of signal or gradient loss the training absorbs (default: the "
        "calibrated sigprop.diagnostics.trainable.DEPTH_BUDGET)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON report")
    p.set_defaults(func=run)


def _options(args):
    """Everything checkable before torch is imported."""
    from sigprop.cli.check import parse_input_shape
    from sigprop.cli.models import check_model_options
    from sigprop.validate import InvalidInput, positive_float

    shape = parse_input_shape(args.input_shape)
    if args.arch is not None and args.trust_pickle:
        raise InvalidInput(
            "--arch (a state dict) and --trust-pickle (a whole module) exclude each other"
        )
    check_model_options(args, model_is_spec=not args.trust_pickle)
    if args.batch < 2:
        raise InvalidInput("--batch must be at least 2 (a pair gives the input correlation)")
    if args.depth_budget is not None:
        positive_float(args.depth_budget, "--depth-budget")
    return shape


def _input_shape(model, shape, spec_name: str):
    from sigprop.nn.kinds import is_weight_layer
    from sigprop.validate import InvalidInput

    if shape is not None:
        return shape
    if spec_name.startswith(("torchvision:", "timm:")):
        return (3, 224, 224)
    first = next((m for m in model.modules() if is_weight_layer(m)), None)
    if first is not None and first.weight.ndim == 2:
        return (int(first.weight.shape[1]),)
    raise InvalidInput("pass --input-shape C,H,W: the model's input shape cannot be inferred")


def run(args: argparse.Namespace) -> int:
    shape = _options(args)
    import torch

    from sigprop.cli.models import build_or_load, masks_from_zeros, prune_for_cli
    from sigprop.validate import InvalidInput

    model, path = build_or_load(args.model, args.arch, args.seed, trust_pickle=args.trust_pickle)
    if not isinstance(model, torch.nn.Module):
        raise InvalidInput(f"{args.model} does not hold a torch module")
    name = args.arch or args.model
    shape = _input_shape(model, shape, name)
    gen = torch.Generator().manual_seed(args.seed)
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.randn(args.batch, *shape, generator=gen, dtype=dtype)
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:2])
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise InvalidInput(
            f"the model cannot run on inputs of shape {tuple(shape)}: {str(exc)[:200]}"
        ) from None
    out = out[0] if isinstance(out, tuple | list) else out
    notes = []
    masked = masks_from_zeros(model)
    if masked:
        notes.append(f"{masked} layer(s) with exactly-zero weights read as pruned")
    if args.density is not None:
        notes.append(prune_for_cli(model, args.method, args.density, x, out, args.seed))
    model.train()  # training is what is predicted: BatchNorm on batch statistics
    from sigprop.diagnostics import trainability

    result = trainability(model, x, depth_budget=args.depth_budget)
    if args.json:
        from sigprop._json import to_jsonable

        payload = {
            "model": name,
            "checkpoint": path,
            "input_shape": list(shape),
            "notes": notes,
            **result.to_dict(),
        }
        print(json.dumps(to_jsonable(payload), indent=2, allow_nan=False))
    else:
        print(_format(name, result, notes))
    return 0 if result.trainable else 1


def _format(name: str, result, notes) -> str:
    from sigprop.io import printable as p

    ind = result.indicators
    e = result.effective_depth
    lines = [
        f"model: {p(name)} ({ind.depth} weight layers, {ind.structure})",
        f"prediction: {'TRAINABLE' if result.trainable else 'NOT TRAINABLE'}  "
        f"score {result.score:.3f}  (E = {'inf' if math.isinf(e) else f'{e:.3g}'} e-folds, "
        f"budget {result.depth_budget:g})",
        f"  correlation depth D  {ind.correlation_depth:.4g}   (ξ_c ≈ {ind.xi_c:.3g} layers)",
        f"  gradient depth G     {ind.log_grad_ratio:+.4g}  (ln ‖δ¹‖²/‖δᴸ‖²)",
        f"  finite fan-in β      {ind.fan_in_depth:.4g}   (min effective fan-in "
        f"{ind.min_fan_in:.3g})",
        f"  density {ind.density:.4g}, effective "
        f"{'unknown' if ind.effective_density is None else f'{ind.effective_density:.4g}'}, "
        f"connected {ind.connected}",
    ]
    if ind.bypassed_layers:
        lines.append(f"  bypassed collapsed layers: {', '.join(map(p, ind.bypassed_layers))}")
    lines.extend(f"reason: {r}" for r in result.reasons)
    lines.extend(f"note: {n}" for n in notes)
    return "\n".join(lines)
