"""Which graph a check uses, and what it falls back to (each mapper returns a reason)."""

from __future__ import annotations

import sys
from typing import Any

from sigprop.diagnostics.collapse.chain import dct_offset_connectivity, map_chain
from sigprop.diagnostics.collapse.graph import WeightLayer
from sigprop.diagnostics.collapse.reach import analyse
from sigprop.diagnostics.collapse.report import CollapseReport
from sigprop.validate import InvalidInput


def is_module(x: Any) -> bool:
    """An ``nn.Module``, decided without importing torch for anything else."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.nn.Module)


def from_chain(layers: list[WeightLayer], notes: list[str], progress: bool) -> CollapseReport:
    if not layers:
        raise InvalidInput("no weight layers given")
    for layer in layers:
        if len(layer.shape) < 2:
            raise InvalidInput(
                f"layer {layer.name!r}: a weight needs >= 2 dims, got shape {layer.shape}"
            )
    g, reason = map_chain(layers)
    if reason is not None:
        notes.append(f"effective sparsity not computed: {reason}")
        return analyse(None, layers, "none", notes, progress)
    return analyse(g, layers, "chain", notes, progress)


def from_module(
    model: Any,
    notes: list[str],
    input_shape: Any,
    probe: bool,
    progress: bool,
    how: str = "fx",
) -> CollapseReport:
    from sigprop.diagnostics.collapse.from_fx import map_module, module_weight_layers

    g, reason, captured = map_module(model, input_shape)
    if reason is not None:
        notes.append(
            f"could not map the traced graph ({reason}); used the weight layers in module order"
        )
        report = from_chain(module_weight_layers(model), notes, progress)
    else:
        from sigprop.diagnostics.collapse.verdict import with_structure

        report = analyse(g, [layer for layer, _, _ in g.layers], how, notes, progress)
        if input_shape is not None:
            from sigprop.diagnostics.collapse.exact import with_exact

            report = with_exact(report, captured)
        else:
            report = report.with_notes(
                "effective sparsity at channel level (a lower bound); give an input shape "
                "for the exact weight-level count"
            )
        report = with_structure(report, g, captured)
    if probe:
        from sigprop.diagnostics.collapse.probe import with_probe

        shape = input_shape if input_shape is not None else getattr(captured, "input_shape", None)
        report = with_probe(report, model, shape)
    return report


def from_checkpoint(
    ckpt: Any, arch: str | None, input_shape: Any, probe: bool, progress: bool
) -> CollapseReport:
    if arch is not None:
        from sigprop.io.arch import with_arch

        ckpt = with_arch(ckpt, arch)
    notes = list(ckpt.notes)
    if getattr(ckpt, "arch", None) is not None:
        from sigprop.diagnostics.collapse.from_arch import default_shape

        shape = input_shape if input_shape is not None else default_shape(ckpt.arch, ckpt.module)
        return from_module(ckpt.module, notes, shape, probe, progress, how=f"arch:{ckpt.arch}")
    if getattr(ckpt, "exported", None) is not None:
        from sigprop.diagnostics.collapse.from_export import map_export

        g, reason = map_export(ckpt.exported)
        if reason is None:
            from sigprop.diagnostics.collapse.exact import with_masks
            from sigprop.diagnostics.collapse.exact_export import export_effective_masks
            from sigprop.diagnostics.collapse.verdict import with_structure

            report = analyse(g, [layer for layer, _, _ in g.layers], "export", notes, progress)
            masks, why, shape = export_effective_masks(ckpt.exported, input_shape)
            report = with_masks(report, masks, why, shape)
            return with_structure(report, g, None, ckpt.tensors)
        notes.append(f"could not map the exported graph ({reason}); used the layer chain")
    if getattr(ckpt, "module", None) is not None:
        return from_module(ckpt.module, notes, input_shape, probe, progress)
    layers = [
        WeightLayer(
            t.name,
            t.weight,
            t.mask,
            offset=dct_offset_connectivity(t.shape) if t.dct_offset else None,
        )
        for t in ckpt.layer_tensors()
    ]
    from sigprop.diagnostics.collapse.known import guess_architecture

    guess = guess_architecture(ckpt.tensors)
    if guess is not None:
        notes.append(
            f"the key names match {guess}: pass --arch {guess} (arch= in check_collapse) "
            "to check it with its real graph"
        )
    return from_chain(layers, notes, progress)
