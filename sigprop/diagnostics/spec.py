"""``describe(model)``: the per-layer specification that bridges a torch model and the theory.

For every weight layer (linear, convolution, their masked and DCT-plus-sparse variants) the
spec records what the mean-field theory needs to make a prediction for *this* network, read
from the weights as they are (not from the initialiser's intent):

* ``sigma_w2 = fan_in * mean(W_eff**2)`` and ``sigma_b2 = mean(b**2)``, the empirical
  versions of the variances in W_ij ~ N(0, σ_w²/fan_in), b_i ~ N(0, σ_b²) (Poole et al. 2016,
  arXiv 1606.05340, §2). ``W_eff`` is the weight the forward pass uses: ``weight * weight_mask``
  for masked layers, ``alpha * D + S`` for DCT-plus-sparse layers (Price & Tanner 2021,
  arXiv 2102.07655, §3). A random mask of density ρ therefore shows up as ρσ_w² and a
  rescaled mask as the dense σ_w² (Hayou et al. 2021, arXiv 2002.08797, §4), without the spec
  having to know how the mask was made.
* the mask density of the layer and its distribution over output units;
* the elementwise activation that follows the layer (its theory name, e.g. ``"relu"``,
  ``"leaky_relu:0.2"``), ``None`` when none follows (a linear map to the next layer);
* the DCT offset ``alpha`` and the residual-branch scale, when they apply.

Sequential models (nested ``nn.Sequential``) are walked module by module; residual blocks
built by ``sigprop.nn`` (modules with a ``scale`` attribute) are recognised; any other model is
traced with ``torch.fx`` and every module or operation that the walk cannot map to the theory
is listed in ``ModelSpec.unmapped`` rather than guessed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from sigprop._json import to_jsonable
from sigprop.diagnostics.walk import (  # noqa: F401 - activation_name, is_neutral re-exported
    _walk_sequential,
    _walk_traced,
    _Walker,
    activation_name,
    is_neutral,
)
from sigprop.nn.kinds import is_dct_layer, is_weight_layer, layer_kind
from sigprop.nn.utils import sum_sq
from sigprop.validate import InvalidInput

__all__ = [
    "LayerSpec",
    "ModelSpec",
    "UnitDensity",
    "describe",
    "effective_weight",
    "is_weight_layer",
    "layer_kind",
]

# --------------------------------------------------------------------------------------------
# Module classification: sigprop.nn.kinds (re-exported: is_weight_layer, layer_kind)
# --------------------------------------------------------------------------------------------


def effective_weight(module: nn.Module) -> torch.Tensor:
    """The weight the forward pass multiplies by, without any DCT offset: ``weight * weight_mask``.

    For ``torch.nn.utils.prune``-pruned layers ``module.weight`` is already the masked tensor and
    multiplying by the mask again is harmless.
    """
    weight = module.weight
    mask = getattr(module, "_buffers", {}).get("weight_mask")
    if mask is not None:
        if mask.shape != weight.shape:
            raise InvalidInput(
                f"weight_mask of shape {tuple(mask.shape)} does not match weight of shape "
                f"{tuple(weight.shape)}"
            )
        weight = weight * mask
    return weight


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UnitDensity:
    """Distribution over output units (channels for convolutions) of the kept fraction of weights.

    ``dead`` counts units with no kept weight at all (they output their bias only).
    """

    min: float
    mean: float
    max: float
    std: float
    dead: int


@dataclass(frozen=True)
class LayerSpec:
    """One weight layer as the theory sees it.

    Fields
    ------
    name: qualified module name (``model.get_submodule(name)``).
    kind: ``"linear"``, ``"conv"``, ``"dct_linear"`` or ``"dct_conv"``.
    shape: shape of the weight tensor.
    fan_in: weights feeding one output unit (``in_features``; ``in_channels/groups * kernel``).
    fan_out: torch's convention (``out_features``; ``out_channels * kernel``).
    n_units: output units (``out_features`` or ``out_channels``), the width N_l of the theory.
    density: fraction of weight entries kept by the mask (1.0 when unmasked).
    unit_density: per-output-unit kept fraction, summarised.
    sigma_w2: ``fan_in * mean(W_eff**2)`` — the empirical σ_w², mask and DCT offset included.
    sigma_b2: ``mean(b**2)``, 0.0 without bias.
    activation: theory name of the elementwise nonlinearity applied to this layer's output
        before the next weight layer; ``None`` if none (identity).
    input_activation: the nonlinearity applied to this layer's input (in a chain, the
        previous layer's ``activation``; in a pre-activation residual block, the one applied
        to the residual stream); ``None`` if none.
    alpha: DCT offset scale of a DCT-plus-sparse layer, else ``None``.
    residual_scale: scale of the residual branch containing the layer, else ``None``.
    residual_block: name of that residual block, else ``None``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    fan_in: int
    fan_out: int
    n_units: int
    density: float
    unit_density: UnitDensity
    sigma_w2: float
    sigma_b2: float
    activation: str | None
    input_activation: str | None = None
    alpha: float | None = None
    residual_scale: float | None = None
    residual_block: str | None = None

    def to_dict(self) -> dict:
        return to_jsonable(self, "LayerSpec")


@dataclass(frozen=True)
class ModelSpec:
    """Per-layer spec of a model, in forward order.

    Fields
    ------
    layers: one ``LayerSpec`` per weight layer, in the order the forward pass meets them.
    structure: ``"sequential"`` (a chain), ``"residual"`` (sigprop residual blocks) or
        ``"graph"`` (any other traced model).
    unmapped: modules/operations the theory cannot account for (e.g. ``"pool: MaxPool2d"``,
        ``"add_1: <built-in function add>"``); empty when the spec is complete. With a
        ``graph``, for ``"graph"`` structures: the translation's untranslated nodes.
    density: kept fraction over all weight layers' entries.
    graph: with ``describe(model, example_input)``: the model translated into the theory's
        IR (:class:`sigprop.diagnostics.graph.translate.Translation`), else ``None``.
    batch_size: the example input's batch size (``predict``'s default B), else ``None``.
    blocks: module names whose output is a residual sum (from ``graph``; empty without).
    """

    layers: tuple[LayerSpec, ...]
    structure: str
    unmapped: tuple[str, ...] = field(default_factory=tuple)
    density: float = 1.0
    graph: object | None = field(default=None, compare=False, repr=False)
    batch_size: int | None = None
    blocks: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """True when every module/operation was mapped (predictions apply as stated)."""
        return not self.unmapped

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def to_dict(self) -> dict:
        """``layers``, ``structure``, ``unmapped`` and ``density``; with a ``graph`` also
        ``batch_size``, ``blocks`` and ``graph_nodes`` (its node count; the graph itself is
        left out)."""
        out = {
            "layers": self.layers,
            "structure": self.structure,
            "unmapped": self.unmapped,
            "density": self.density,
        }
        if self.graph is not None:
            out["batch_size"] = self.batch_size
            out["blocks"] = self.blocks
            out["graph_nodes"] = len(self.graph.graph.nodes)
        return to_jsonable(out, "ModelSpec")


# --------------------------------------------------------------------------------------------
# Layer statistics
# --------------------------------------------------------------------------------------------


def _dct_offset_frobenius(sparse: torch.Tensor) -> tuple[float, float]:
    """‖D‖_F² and ⟨D, S⟩ for a DCT-plus-sparse layer (D: ``sigprop.theory.pruned.dct_matrix``).

    D (n_out × n_in) is the top-left block of the N×N orthonormal DCT-II, N = max(n_in,
    n_out), so it consists of whole rows or whole columns of an orthogonal matrix and
    ‖D‖_F² = min(n_in, n_out). For a convolution n_in is the patch length P and the patch is
    flattened (kh, kw, c_in) with the channel fastest. Conventions of Price & Tanner 2021
    (arXiv 2102.07655, §3; official code IlanPrice/DCTpS), as in ``sigprop.nn.dct``.
    """
    from sigprop.theory.pruned import dct_matrix

    n_out = sparse.shape[0]
    if sparse.ndim == 2:
        flat = sparse
    else:
        # (c_out, c_in, *k) -> (c_out, *k, c_in): channel fastest in the flattened patch.
        perm = (0, *range(2, sparse.ndim), 1)
        flat = sparse.permute(perm).reshape(n_out, -1)
    n_in = flat.shape[1]
    norm2 = float(min(n_in, n_out))
    rows, cols = torch.nonzero(flat, as_tuple=True)
    if rows.numel() == 0:
        return norm2, 0.0
    d = torch.from_numpy(dct_matrix(n_out, n_in))
    cross = (d[rows, cols] * flat[rows, cols].to(torch.float64)).sum()
    return norm2, float(cross)


def _layer_spec(
    name: str,
    module: nn.Module,
    activation: str | None,
    input_activation: str | None,
    residual_scale: float | None = None,
    residual_block: str | None = None,
) -> LayerSpec:
    with torch.no_grad():
        weight = module.weight.detach()
        mask = getattr(module, "_buffers", {}).get("weight_mask")
        w_eff = effective_weight(module).detach()
        w_sq = sum_sq(w_eff)  # finite unless a weight is (or |W| ≳ 1e154 in float64)
        if not math.isfinite(w_sq):
            what = "non-finite" if not torch.isfinite(w_eff).all() else "overflowing"
            raise InvalidInput(f"layer {name!r} has {what} weights")
        n_units = weight.shape[0]
        fan_in = weight[0].numel()
        fan_out = n_units * (weight[0, 0].numel() if weight.ndim > 2 else 1)
        if mask is not None:
            kept = (mask.detach() != 0).reshape(n_units, -1).sum(dim=1, dtype=torch.float64)
            per_unit = kept / fan_in
            density = float(kept.sum()) / (n_units * fan_in)
        else:
            per_unit = torch.ones(n_units, dtype=torch.float64)
            density = 1.0
        alpha = None
        if is_dct_layer(module):
            alpha = float(torch.as_tensor(module.alpha).detach())
            d_norm2, cross = _dct_offset_frobenius(w_eff)
            w_sq += alpha**2 * d_norm2 + 2.0 * alpha * cross
        # σ_w² = fan_in · mean(W_eff²) = ‖W_eff‖_F² / n_units (Poole et al. 2016, §2).
        sigma_w2 = w_sq / n_units
        bias = getattr(module, "bias", None)
        sigma_b2 = float((bias.detach().to(torch.float64) ** 2).mean()) if bias is not None else 0.0
    return LayerSpec(
        name=name,
        kind=layer_kind(module),
        shape=tuple(weight.shape),
        fan_in=int(fan_in),
        fan_out=int(fan_out),
        n_units=int(n_units),
        density=density,
        unit_density=UnitDensity(
            min=float(per_unit.min()),
            mean=float(per_unit.mean()),
            max=float(per_unit.max()),
            std=float(per_unit.std(unbiased=False)),
            dead=int((per_unit == 0).sum()),
        ),
        sigma_w2=sigma_w2,
        sigma_b2=sigma_b2,
        activation=activation,
        input_activation=input_activation,
        alpha=alpha,
        residual_scale=residual_scale,
        residual_block=residual_block,
    )


# --------------------------------------------------------------------------------------------
# Walks
# --------------------------------------------------------------------------------------------


def describe(model: nn.Module, example_input: torch.Tensor | None = None) -> ModelSpec:
    """Describe ``model`` layer by layer for the mean-field theory (see the module docstring).

    Parameters
    ----------
    model:
        a torch module. ``nn.Sequential`` chains (nested allowed) and sigprop residual
        networks are walked directly; other models are traced with ``torch.fx`` and whatever
        cannot be mapped to the theory is listed in ``ModelSpec.unmapped``.
    example_input:
        a batch (B, *sample_shape) whose shape (never its values) fixes the shapes: the
        model is then also traced and translated into the theory's graph IR
        (``ModelSpec.graph``), which ``predict`` propagates through for any architecture
        (every module's output, ``Prediction.nodes``). Chains and sigprop residual nets keep
        their layer-by-layer predictions; other models get ``structure == "graph"`` and the
        translation's unmapped nodes.

    Returns
    -------
    ModelSpec
        with one ``LayerSpec`` per weight layer in forward order.

    Raises
    ------
    ValueError
        if ``model`` is not a module, has no weight layer, or has non-finite weights or a
        mask of the wrong shape.
    """
    if not isinstance(model, nn.Module):
        raise InvalidInput(f"describe expects a torch.nn.Module, got {type(model).__name__}")
    walker = _Walker()
    if is_weight_layer(model):
        walker.weight("", model)
        structure = "sequential"
    elif isinstance(model, nn.Sequential):
        _walk_sequential(model, "", walker)
        structure = "sequential"
    else:
        structure = "graph"
        _walk_traced(model, "", walker, block=False)
        if not walker.entries:  # not traceable: list the weight layers, activations unknown
            for name, module in model.named_modules():
                if is_weight_layer(module):
                    walker.weight(name, module)
    walker.flush()
    if any(e["block"] is not None for e in walker.entries):
        structure = "residual"
    if not walker.entries:
        raise InvalidInput(
            f"model {type(model).__name__} has no weight layer (Linear/Conv/masked/DCT)"
        )
    layers = tuple(
        _layer_spec(
            e["name"], e["module"], e["activation"], e["input_activation"], e["scale"], e["block"]
        )
        for e in walker.entries
    )
    total = sum(math.prod(layer.shape) for layer in layers)
    kept = sum(layer.density * math.prod(layer.shape) for layer in layers)
    unmapped, extra = tuple(walker.unmapped), {}
    if example_input is not None:
        from sigprop.diagnostics.graph.capture import capture
        from sigprop.diagnostics.graph.translate import translate

        tr = translate(capture(model, example_input=example_input))
        extra = {"graph": tr, "batch_size": int(example_input.shape[0]), "blocks": tr.blocks}
        if structure == "graph" or unmapped:
            structure, unmapped = "graph", tr.describe_unmapped()
    return ModelSpec(
        layers=layers, structure=structure, unmapped=unmapped, density=kept / total, **extra
    )
