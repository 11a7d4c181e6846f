"""Masks: selection from scores, application to a model, bookkeeping and interop.

Shared by every pruning method (a method defines only how it *scores*, STYLE §5):

* :func:`select` and :func:`schedule` (defined in :mod:`sigprop.prune.selection`, re-exported
  here) turn scores into masks with exact counts and give iterative schedules;
* :func:`apply` writes masks into the layers' ``weight_mask`` buffers and zeroes the pruned
  weights; :func:`density_report` counts what is kept.
* :func:`from_torch_prune`, :func:`to_torch_prune` and :func:`convert_from_torch_prune`
  (:mod:`sigprop.prune.interop`, re-exported here) read and write the ``<name>_orig`` / ``<name>_mask`` format of ``torch.nn.utils.prune``.

A *prunable layer* is any module with a ``weight`` parameter and a ``weight_mask`` buffer of
the same shape (``sigprop.nn`` masked and DCT-plus-sparse layers; ``nn.Linear``/``nn.Conv*``
after :func:`attach_masks`). Masks and scores are keyed by the weight's qualified parameter
name, e.g. ``"layers.0.weight"`` -- the name ``model.state_dict()`` uses. Masks returned by
this module are ``torch.bool`` tensors; :func:`apply` also accepts float 0/1 masks.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from sigprop._json import to_jsonable
from sigprop.nn.prunable import prunable_layers, reapply_mask_, require_prunable
from sigprop.prune._checks import _all_finite as _all_finite
from sigprop.prune._checks import _check_scores as _check_scores
from sigprop.prune._checks import validate_mask
from sigprop.prune.interop import convert_from_torch_prune, from_torch_prune, to_torch_prune
from sigprop.prune.selection import kept_count, schedule, select
from sigprop.validate import InvalidInput

__all__ = [
    "DensityReport",
    "LayerDensity",
    "apply",
    "attach_masks",
    "convert_from_torch_prune",
    "current_masks",
    "density_report",
    "from_torch_prune",
    "kept_count",
    "prunable_layers",
    "schedule",
    "select",
    "tied_layers",
    "to_torch_prune",
    "validate_mask",
]


# --------------------------------------------------------------------------- prunable layers
#: Per-layer state of :func:`_masked_forward_pre_hook` — the version counters of the last
#: scan and a weak reference to the weight that carries the gradient hook — kept beside the
#: module, not in it, so a masked model pickles (``torch.save(model)``) and deep-copies
#: cleanly; a copy or an unpickled model starts without state and rescans once.
_HOOK_STATE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forget_mask_state(module: nn.Module) -> None:
    """Drop :func:`_masked_forward_pre_hook`'s state for ``module`` (its next forward rescans
    and re-registers the gradient hook)."""
    _HOOK_STATE.pop(module, None)


def _masked_forward_pre_hook(module: nn.Module, args):
    """Keep a layer made prunable by :func:`attach_masks` exactly masked.

    Zeroes pruned weights in place (only when one is nonzero, to leave autograd's version
    counters alone otherwise) and makes sure the current ``weight`` parameter carries a
    gradient hook multiplying its gradient by the mask. Tensor hooks are dropped by
    ``copy.deepcopy``; the hook is therefore (re)registered lazily here, once per parameter
    object, remembered through a weak reference (in :data:`_HOOK_STATE`). The hook reaches
    the module through a weak reference too, so it always reads the module's current mask.

    While ``torch.export``/``torch.compile`` trace the module the hook does nothing: the
    traced forward uses the weights as they are, which every eager forward, ``set_masks``
    and ``sigprop.nn.reapply_mask_`` leave exactly masked (a data-dependent scan cannot be
    traced).
    """
    if torch.compiler.is_compiling():
        return
    weight, mask = module.weight, module.weight_mask
    state = _HOOK_STATE.setdefault(module, {})
    # the scan is skipped while neither tensor changed since the last one (their autograd
    # version counters), e.g. for repeated forwards between optimiser steps
    versions = (id(weight), weight._version, id(mask), mask._version)
    if state.get("versions") != versions:
        with torch.no_grad():
            if bool(((weight != 0) & (mask == 0)).any()):
                weight.mul_(mask.to(weight.dtype))
        state["versions"] = (id(weight), weight._version, id(mask), mask._version)
        # an all-ones mask (a dense layer: every pruning at initialisation starts there)
        # needs no gradient masking; remembered for this mask's version only
        state["full"] = (weakref.ref(mask), mask._version) if bool(mask.all()) else None
    hooked = state.get("weight")
    if weight.requires_grad and (hooked is None or hooked() is not weight):
        module_ref = weakref.ref(module)

        def mask_grad(grad):
            owner = module_ref()
            if owner is None:
                return grad
            mask = owner.weight_mask
            full = _HOOK_STATE.get(owner, {}).get("full")
            if full is not None and full[0]() is mask and full[1] == mask._version:
                return grad  # the mask is all ones: multiplying would change nothing
            return grad * mask.to(grad.dtype)

        weight.register_hook(mask_grad)
        state["weight"] = weakref.ref(weight)


def _computes_masked(module: nn.Module) -> bool:
    """Whether ``module``'s forward reads its weight only through ``weight * weight_mask``
    (sigprop's masked and DCT-plus-sparse layers, and layers made prunable by
    :func:`attach_masks`, whose pre-hook zeroes pruned weights before each forward). Any
    other module with a ``weight_mask`` buffer is prunable too, but only zeroed weights keep
    it exactly masked."""
    from sigprop.nn.masked import MaskedMixin

    return isinstance(module, MaskedMixin) or any(
        hook is _masked_forward_pre_hook for hook in module._forward_pre_hooks.values()
    )


def attach_masks(
    model: nn.Module,
    layer_types: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d),
) -> list[str]:
    """Make the dense ``nn.Linear`` / ``nn.Conv*`` layers of ``model`` prunable, in place.

    Each such layer without a ``weight_mask`` gets a ``weight_mask`` buffer of ones (same
    dtype and device as its weight) and a forward pre-hook that, before every forward pass,
    zeroes pruned weights and ensures the weight's gradient is multiplied by the mask. The
    layer then computes exactly with ``weight * weight_mask``, pruned weights get zero
    gradients (so momentum and weight decay cannot revive them), and ``weight`` stays an
    ``nn.Parameter``: ``state_dict`` keys are unchanged apart from the new
    ``*.weight_mask`` entries. Module objects are kept (no replacement), so references to
    the layers stay valid; ``sigprop.nn.MaskedLinear.from_dense`` & co. are the alternative
    that replaces a layer by a sigprop masked layer.

    Returns the keys (``"<module>.weight"``) of the layers that received a mask.
    """
    attached = []
    for mod_name, module in model.named_modules():
        if not isinstance(module, layer_types):
            continue
        if "weight_orig" in module._parameters:
            raise InvalidInput(
                f"layer {mod_name!r} is pruned with torch.nn.utils.prune; import it with "
                "sigprop.prune.convert_from_torch_prune instead"
            )
        if "weight_mask" in module._buffers:
            continue
        weight = module.weight
        module.register_buffer("weight_mask", torch.ones_like(weight, requires_grad=False))
        module.register_forward_pre_hook(_masked_forward_pre_hook)
        attached.append(f"{mod_name}.weight" if mod_name else "weight")
    return attached


def tied_layers(model: nn.Module) -> dict[str, str]:
    """Prunable layers whose weight is the very tensor of an earlier prunable layer (tied
    weights): ``{key: key of the first layer holding that weight}``.

    A mask belongs to a weight tensor, not to a module: :func:`prune_at_init` ranks a shared
    weight once and gives every layer that holds it the same mask, and :func:`apply` refuses
    different masks for them (each would zero the shared weight where it prunes, leaving
    the intersection).
    """
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for key, module in prunable_layers(model).items():
        owner = first.setdefault(id(module.weight), key)
        if owner != key:
            out[key] = owner
    return out


def current_masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's current masks as ``torch.bool`` tensors (copies), keyed like the scores."""
    return {k: m.weight_mask.detach() != 0 for k, m in require_prunable(model).items()}


# --------------------------------------------------------------------------- apply / report
def apply(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Write ``masks`` into the layers' ``weight_mask`` buffers and zero pruned weights.

    ``masks`` maps parameter names (``"<module>.weight"``) to bool or 0/1 tensors of the
    weight's shape; layers not named keep their mask. Every mask is validated (known layer,
    shape, binary, no NaN) before anything is written, so a bad mask changes nothing.
    Layers sharing one weight tensor (:func:`tied_layers`) all get the mask given for any of
    them; different masks for them raise ``ValueError``.
    """
    layers = require_prunable(model)
    checked = {}
    for name, mask in masks.items():
        if name not in layers:
            raise InvalidInput(
                f"{name!r} is not a prunable weight of this model; prunable: {', '.join(layers)}"
            )
        checked[name] = validate_mask(mask, layers[name].weight.shape, name)
    groups: dict[str, list[str]] = {}
    for name, owner in tied_layers(model).items():
        groups.setdefault(owner, [owner]).append(name)
    for members in groups.values():
        given = [n for n in members if n in checked]
        if not given:
            continue
        mask = checked[given[0]]
        for other in given[1:]:
            if not torch.equal(checked[other].to(mask.device), mask):
                raise InvalidInput(
                    f"layers {given[0]!r} and {other!r} share one weight tensor but were given "
                    "different masks"
                )
        checked.update(dict.fromkeys(members, mask))
    with torch.no_grad():
        for name, mask in checked.items():
            module = layers[name]
            _record_dense_scale(module)
            module.weight_mask.copy_(mask.to(module.weight_mask.device))
            reapply_mask_(module)


def _record_dense_scale(module: nn.Module) -> None:
    """Before a layer's first mask is written: remember the dense mean square of its weight
    (``module.sigprop_dense_sq``, E[w²] over all weights) while nothing is pruned yet, so
    :func:`sigprop.nn.rescale_` knows the dense scale of layers without an init record
    (torchvision's, timm's). ``None`` when the layer was already pruned."""
    if "sigprop_dense_sq" in module.__dict__:
        return
    dense = bool(module.weight_mask.all())
    value = float(module.weight.detach().double().pow(2).mean()) if dense else None
    module.__dict__["sigprop_dense_sq"] = value


@dataclass(frozen=True)
class LayerDensity:
    """Kept weights of one prunable layer.

    Fields: ``name`` (parameter name), ``shape`` (weight shape), ``kept`` (number of ones in
    the mask), ``total`` (number of weights), ``density`` (kept / total).
    """

    name: str
    shape: tuple[int, ...]
    kept: int
    total: int
    density: float

    def to_dict(self) -> dict:
        return to_jsonable(self, "LayerDensity")


@dataclass(frozen=True)
class DensityReport:
    """Kept/total per prunable layer and over the whole model.

    Fields: ``layers`` (tuple of :class:`LayerDensity`, model order), ``kept`` and ``total``
    (summed over layers), ``density`` (kept / total), ``empty_layers`` (names of layers with
    nothing kept -- layer collapse).
    """

    layers: tuple[LayerDensity, ...]
    kept: int
    total: int
    density: float
    empty_layers: tuple[str, ...]

    def to_dict(self) -> dict:
        return to_jsonable(self, "DensityReport")


def density_report(model: nn.Module) -> DensityReport:
    """Count the kept weights of every prunable layer of ``model`` (from ``weight_mask``).

    Every layer is listed; the model totals count a weight tensor shared by several layers
    (:func:`tied_layers`) once.
    """
    rows = []
    for name, module in require_prunable(model).items():
        kept = int((module.weight_mask != 0).sum())
        total = module.weight_mask.numel()
        rows.append(LayerDensity(name, tuple(module.weight.shape), kept, total, kept / total))
    tied = tied_layers(model)
    kept = sum(r.kept for r in rows if r.name not in tied)
    total = sum(r.total for r in rows if r.name not in tied)
    return DensityReport(
        layers=tuple(rows),
        kept=kept,
        total=total,
        density=kept / total,
        empty_layers=tuple(r.name for r in rows if r.kept == 0),
    )
