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
import operator
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from sigprop.nn.activation import theory_spec
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
# Module classification (shared by describe, measure and jacobian_spectrum)
# --------------------------------------------------------------------------------------------

_CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)

#: Modules that neither carry weights nor change the mean-field statistics of a sample.
_NEUTRAL_MODULES = (nn.Flatten, nn.Unflatten, nn.Identity, nn.Dropout)

_ELEMENTWISE_FUNCTIONS = {
    torch.relu: "relu",
    torch.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    torch.nn.functional.relu: "relu",
    torch.nn.functional.tanh: "tanh",
    torch.nn.functional.sigmoid: "sigmoid",
    torch.nn.functional.gelu: "gelu",
    torch.nn.functional.silu: "silu",
    torch.nn.functional.elu: "elu",
    torch.nn.functional.leaky_relu: "leaky_relu",
}
_ELEMENTWISE_METHODS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid"}
_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, getattr, operator.getitem}
_SHAPE_METHODS = {"flatten", "view", "reshape", "contiguous", "size", "squeeze", "unsqueeze"}


def _is_dct(module: nn.Module) -> bool:
    return hasattr(module, "alpha") and isinstance(getattr(module, "weight", None), torch.Tensor)


def is_weight_layer(module: nn.Module) -> bool:
    """True for linear/conv layers and anything carrying a ``weight_mask`` buffer or a DCT offset."""
    if isinstance(module, (nn.Linear, *_CONV_TYPES)):
        return True
    weight = getattr(module, "weight", None)
    has_mask = "weight_mask" in getattr(module, "_buffers", {})
    return isinstance(weight, torch.Tensor) and weight.ndim >= 2 and (has_mask or _is_dct(module))


def layer_kind(module: nn.Module) -> str:
    """``"linear"``, ``"conv"``, ``"dct_linear"`` or ``"dct_conv"`` (by the weight's rank)."""
    conv = module.weight.ndim > 2
    if _is_dct(module):
        return "dct_conv" if conv else "dct_linear"
    return "conv" if conv else "linear"


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


def activation_name(module: nn.Module) -> str | None:
    """Theory spec of an elementwise activation module (``"relu"``, ``"leaky_relu:0.2"``), or
    ``None`` if the module is not one the theory registry knows
    (:func:`sigprop.nn.activation.theory_spec`, the one table of the torch side)."""
    return theory_spec(module)


def is_neutral(module: nn.Module) -> bool:
    return isinstance(module, _NEUTRAL_MODULES)


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
        out = asdict(self)
        out["shape"] = list(self.shape)
        return out


@dataclass(frozen=True)
class ModelSpec:
    """Per-layer spec of a model, in forward order.

    Fields
    ------
    layers: one ``LayerSpec`` per weight layer, in the order the forward pass meets them.
    structure: ``"sequential"`` (a chain), ``"residual"`` (sigprop residual blocks) or
        ``"graph"`` (traced with torch.fx).
    unmapped: modules/operations the theory cannot account for (e.g. ``"pool: MaxPool2d"``,
        ``"add_1: <built-in function add>"``); empty when the spec is complete.
    density: kept fraction over all weight layers' entries.
    """

    layers: tuple[LayerSpec, ...]
    structure: str
    unmapped: tuple[str, ...] = field(default_factory=tuple)
    density: float = 1.0

    @property
    def complete(self) -> bool:
        """True when every module/operation was mapped (predictions apply as stated)."""
        return not self.unmapped

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(layer.name for layer in self.layers)

    def to_dict(self) -> dict:
        return {
            "layers": [layer.to_dict() for layer in self.layers],
            "structure": self.structure,
            "unmapped": list(self.unmapped),
            "density": self.density,
        }


# --------------------------------------------------------------------------------------------
# Layer statistics
# --------------------------------------------------------------------------------------------


def _dct_entries(rows: torch.Tensor, cols: torch.Tensor, n: int) -> torch.Tensor:
    """Entries (k, j) of the n×n orthonormal DCT-II matrix (Price & Tanner 2021, §3)."""
    rows = rows.to(torch.float64)
    cols = cols.to(torch.float64)
    scale = torch.where(rows == 0, math.sqrt(1.0 / n), math.sqrt(2.0 / n))
    return scale * torch.cos(math.pi * (2.0 * cols + 1.0) * rows / (2.0 * n))


def _dct_offset_frobenius(sparse: torch.Tensor) -> tuple[float, float]:
    """‖D‖_F² and ⟨D, S⟩ for a DCT-plus-sparse layer, without materialising D.

    D (n_out × n_in) is the top-left block of the N×N orthonormal DCT-II, N = max(n_in,
    n_out), so it consists of whole rows or whole columns of an orthogonal matrix and
    ‖D‖_F² = min(n_in, n_out). For a convolution n_in is the patch length P and the patch is
    flattened (kh, kw, c_in) with the channel fastest. Conventions of Price & Tanner 2021
    (arXiv 2102.07655, §3; official code IlanPrice/DCTpS), as in ``sigprop.nn.dct``.
    """
    n_out = sparse.shape[0]
    if sparse.ndim == 2:
        flat = sparse
    else:
        # (c_out, c_in, *k) -> (c_out, *k, c_in): channel fastest in the flattened patch.
        perm = (0, *range(2, sparse.ndim), 1)
        flat = sparse.permute(perm).reshape(n_out, -1)
    n_in = flat.shape[1]
    n = max(n_in, n_out)
    norm2 = float(min(n_in, n_out))
    rows, cols = torch.nonzero(flat, as_tuple=True)
    if rows.numel() == 0:
        return norm2, 0.0
    cross = (_dct_entries(rows, cols, n) * flat[rows, cols].to(torch.float64)).sum()
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
        w_eff = effective_weight(module).detach().to(torch.float64)
        if not torch.isfinite(w_eff).all():
            raise InvalidInput(f"layer {name!r} has non-finite weights")
        n_units = weight.shape[0]
        fan_in = weight[0].numel()
        fan_out = n_units * (weight[0, 0].numel() if weight.ndim > 2 else 1)
        if mask is not None:
            kept = (mask.detach() != 0).reshape(n_units, -1).to(torch.float64)
        else:
            kept = torch.ones(n_units, fan_in, dtype=torch.float64)
        per_unit = kept.mean(dim=1)
        density = float(kept.mean())
        sum_sq = float((w_eff**2).sum())
        alpha = None
        if _is_dct(module):
            alpha = float(torch.as_tensor(module.alpha).detach())
            d_norm2, cross = _dct_offset_frobenius(w_eff)
            sum_sq += alpha**2 * d_norm2 + 2.0 * alpha * cross
        # σ_w² = fan_in · mean(W_eff²) = ‖W_eff‖_F² / n_units (Poole et al. 2016, §2).
        sigma_w2 = sum_sq / n_units
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


def _is_residual_block(module: nn.Module) -> bool:
    return (
        hasattr(module, "scale")
        and not is_weight_layer(module)
        and any(is_weight_layer(m) for m in module.modules())
    )


def _residual_scale(module: nn.Module) -> float:
    scale = module.scale
    if isinstance(scale, torch.Tensor):
        return float(scale.detach())
    return float(scale)


class _Walker:
    """Collects weight layers, the activation applied to each one's output and the one
    applied to its input, in forward order.

    An activation applied to something other than a weight layer's output (the residual
    stream of a pre-activation block, the input) is "floating": it is mapped when a weight
    layer consumes it directly (it becomes that layer's ``input_activation``) and reported
    as unmapped otherwise. Graph walks match producers and consumers through fx nodes;
    the sequential walk through adjacency.
    """

    _SEQ = "sequential"

    def __init__(self) -> None:
        self.entries: list[dict] = []
        self.unmapped: list[str] = []
        self.pending: dict | None = None  # last weight layer, while its output is untouched
        self.last_act: str | None = None  # sequential walk: the op just before, if an act
        self.act_nodes: dict = {}  # graph walk: activation node -> name
        self.floating: dict = {}  # key (node or _SEQ) -> (name, where), not yet consumed

    def weight(self, name: str, module: nn.Module, scale=None, block=None, node=None) -> None:
        if node is None:
            input_act = self.last_act
            self.floating.pop(self._SEQ, None)
        else:
            source = _source(node)
            input_act = self.act_nodes.get(source)
            self.floating.pop(source, None)
        self.entries.append(
            {
                "name": name,
                "module": module,
                "activation": None,
                "input_activation": input_act,
                "scale": scale,
                "block": block,
                "node": node,
            }
        )
        self.pending = self.entries[-1]
        self.last_act = None

    def activation(self, name: str, where: str, node=None) -> None:
        pending = self.pending
        if node is None:
            self.flush()  # an earlier floating activation nobody consumed
            if pending is not None:
                pending["activation"] = name
            else:
                self.floating[self._SEQ] = (name, where)
        else:
            self.act_nodes[node] = name
            if pending is not None and _source(node) is pending["node"]:
                pending["activation"] = name
            else:
                self.floating[node] = (name, where)
        self.pending = None
        self.last_act = name

    def other(self, desc: str) -> None:
        self.unmapped.append(desc)
        self.pending = None
        self.last_act = None
        self.flush()

    def flush(self) -> None:
        """Report floating activations that no weight layer consumed."""
        for name, where in self.floating.values():
            self.unmapped.append(
                f"{where}: activation {name} not applied to a weight layer's output or input"
            )
        self.floating.clear()


def _walk_sequential(model: nn.Module, prefix: str, walker: _Walker) -> None:
    for child_name, child in model.named_children():
        name = f"{prefix}.{child_name}" if prefix else child_name
        if is_weight_layer(child):
            walker.weight(name, child)
        elif isinstance(child, nn.Sequential):
            _walk_sequential(child, name, walker)
        elif _is_residual_block(child):
            _walk_traced(child, name, walker, block=True)
        elif (act := activation_name(child)) is not None:
            walker.activation(act, name)
        elif is_neutral(child):
            continue
        elif any(True for _ in child.children()):
            _walk_traced(child, name, walker, block=False)
        else:
            walker.other(f"{name}: {type(child).__name__}")


def _walk_traced(module: nn.Module, prefix: str, walker: _Walker, block: bool) -> None:
    """Trace a composite module (a residual block or a custom module) and walk its graph."""
    try:
        graph = _Tracer().trace(module)
    except Exception as exc:  # noqa: BLE001 - any tracing failure is reported, not guessed
        walker.other(
            f"{prefix or type(module).__name__}: not traceable by torch.fx ({type(exc).__name__})"
        )
        return
    block_info = (_residual_scale(module), prefix) if block else None
    _walk_graph(module, graph, prefix, walker, block_info)
    if block:
        # the block's output is the residual sum, not the branch's last weight layer
        walker.pending = None
        walker.last_act = None


class _Tracer(torch.fx.Tracer):
    """fx tracer that keeps weight layers, activations and residual blocks as leaves (sigprop
    modules live outside ``torch.nn`` and would otherwise be traced through)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if is_weight_layer(m) or activation_name(m) is not None:
            return True
        if _is_residual_block(m) and module_qualified_name:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _source(node):
    """The tensor argument of a single-input node, looking through shape-only operations."""
    arg = node.args[0] if node.args else None
    while (
        isinstance(arg, torch.fx.Node)
        and (
            (arg.op == "call_method" and arg.target in _SHAPE_METHODS)
            or (arg.op == "call_function" and arg.target in (torch.flatten, torch.reshape))
        )
        and arg.args
    ):
        arg = arg.args[0]
    return arg


def _walk_graph(root: nn.Module, graph, prefix: str, walker: _Walker, block_info=None) -> None:
    scale, block = block_info if block_info else (None, None)
    residual_ops_fn = (operator.add, operator.mul, torch.add, torch.mul)
    for node in graph.nodes:
        where = f"{prefix}.{node.name}" if prefix else node.name
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op == "call_module":
            qual = f"{prefix}.{node.target}" if prefix else node.target
            module = root.get_submodule(node.target)
            if is_weight_layer(module):
                walker.weight(qual, module, scale, block, node)
            elif (act := activation_name(module)) is not None:
                walker.activation(act, qual, node)
            elif is_neutral(module):
                continue
            elif _is_residual_block(module) and block_info is None:
                _walk_traced(module, qual, walker, block=True)
            else:
                walker.other(f"{qual}: {type(module).__name__}")
        elif node.op == "call_function":
            if node.target in _ELEMENTWISE_FUNCTIONS:
                act = _ELEMENTWISE_FUNCTIONS[node.target]
                if act == "leaky_relu":
                    slope = node.kwargs.get(
                        "negative_slope", node.args[1] if len(node.args) > 1 else 0.01
                    )
                    act = f"leaky_relu:{slope:g}"
                walker.activation(act, where, node)
            elif node.target in _SHAPE_FUNCTIONS:
                continue
            elif block_info is not None and node.target in residual_ops_fn:
                continue  # the residual sum and the branch scale: recorded as residual_scale
            else:
                walker.other(f"{where}: {_fn_name(node.target)}")
        elif node.op == "call_method":
            if node.target in _ELEMENTWISE_METHODS:
                walker.activation(_ELEMENTWISE_METHODS[node.target], where, node)
            elif node.target in _SHAPE_METHODS:
                continue
            elif block_info is not None and node.target in ("add", "mul"):
                continue
            else:
                walker.other(f"{where}: .{node.target}()")


def _fn_name(target) -> str:
    return getattr(target, "__qualname__", None) or getattr(target, "__name__", None) or str(target)


def describe(model: nn.Module) -> ModelSpec:
    """Describe ``model`` layer by layer for the mean-field theory (see the module docstring).

    Parameters
    ----------
    model:
        a torch module. ``nn.Sequential`` chains (nested allowed) and sigprop residual
        networks are walked directly; other models are traced with ``torch.fx`` and whatever
        cannot be mapped to the theory is listed in ``ModelSpec.unmapped``.

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
    return ModelSpec(
        layers=layers, structure=structure, unmapped=tuple(walker.unmapped), density=kept / total
    )
