"""Approximate isometry of a pruned network (Lee, Ajanthan, Gould & Torr 2020, arXiv 1906.06307).

Pruning at initialisation breaks the (layerwise) dynamical isometry of an orthogonally
initialised network: a masked orthogonal matrix C ⊙ W is no longer orthogonal, so the
singular values of the input–output Jacobian spread out. Lee et al. (§4.2, eq. 6) restore it
without data by minimising, over the kept weights only,

    Σ_l ‖(C^l ⊙ W^l)ᵀ(C^l ⊙ W^l) − I‖_F,

with plain gradient descent (their code: SGD, learning rate 0.1, 10,000 steps; the norm is
the Frobenius norm itself, not its square). Their weights are stored (fan_in, fan_out), so
the Gram matrix is fan_out × fan_out; for a torch weight W of shape (out, fan_in) that is
W Wᵀ, which is what is used here (convolution kernels flattened to (out, fan_in)).

The gradient is written out by hand: with A = W Wᵀ − g² I,
∂‖A‖_F/∂W = 2 A W / ‖A‖_F, masked by C so pruned weights stay exactly zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sigprop._json import to_jsonable
from sigprop.validate import InvalidInput, positive_float

__all__ = ["IsometryResult", "approximate_isometry_", "isometry_penalty"]


@dataclass(frozen=True)
class IsometryResult:
    """What :func:`approximate_isometry_` did.

    Fields
    ------
    layer_names: qualified names of the weights optimised, in model order.
    initial_penalty, final_penalty: per layer, ‖(C⊙W)(C⊙W)ᵀ − g² I‖_F before and after.
    steps: gradient steps taken; ``lr``: their learning rate; ``gain``: the target scale g.
    """

    layer_names: tuple[str, ...]
    initial_penalty: tuple[float, ...]
    final_penalty: tuple[float, ...]
    steps: int
    lr: float
    gain: float

    @property
    def initial_total(self) -> float:
        """Σ_l of the initial penalties (the objective of arXiv 1906.06307 eq. 6)."""
        return float(sum(self.initial_penalty))

    @property
    def final_total(self) -> float:
        """Σ_l of the final penalties."""
        return float(sum(self.final_penalty))

    def to_dict(self) -> dict[str, Any]:
        """The fields plus ``initial_total`` and ``final_total`` (non-finite values: ``None``)."""
        out = to_jsonable(self, "IsometryResult")
        out["initial_total"] = to_jsonable(self.initial_total)
        out["final_total"] = to_jsonable(self.final_total)
        return out


def _weight_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    from sigprop.nn.init import init_layers
    from sigprop.nn.kinds import is_dct_layer

    if not isinstance(model, nn.Module):
        raise InvalidInput(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        if is_dct_layer(module):
            raise InvalidInput(
                f"layer {name!r} is DCT-plus-sparse: its weight is α·D + S, not a masked "
                "matrix, so the approximate-isometry objective does not apply"
            )
    layers = init_layers(model)
    if not layers:
        raise InvalidInput("model has no linear or convolution layer to make isometric")
    return layers


def _mask_of(module: nn.Module) -> torch.Tensor | None:
    mask = getattr(module, "weight_mask", None)
    return None if mask is None else mask.detach()


def _penalty(w: torch.Tensor, gain: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A = W Wᵀ − g² I and ‖A‖_F for a (out, fan_in) matrix."""
    gram = w @ w.T
    gram.diagonal().sub_(gain**2)
    return gram, torch.linalg.matrix_norm(gram)


@torch.no_grad()
def isometry_penalty(model: nn.Module, gain: float = 1.0) -> dict[str, float]:
    """‖(C⊙W)(C⊙W)ᵀ − g² I‖_F per weight layer (arXiv 1906.06307 §4.2, eq. 6), in float64.

    ``C`` is the layer's ``weight_mask`` (all ones for unmasked layers); zero for an
    orthogonal square layer with ``gain`` g, unpruned.
    """
    gain = positive_float(gain, "gain")
    out = {}
    for name, module in _weight_layers(model):
        w = module.weight.detach().to(torch.float64).flatten(1)
        mask = _mask_of(module)
        if mask is not None:
            w = w * mask.to(torch.float64).flatten(1)
        out[f"{name}.weight" if name else "weight"] = float(_penalty(w, gain)[1])
    return out


@torch.no_grad()
def approximate_isometry_(
    model: nn.Module,
    *,
    steps: int = 10_000,
    lr: float = 0.1,
    gain: float = 1.0,
    progress: bool = True,
) -> IsometryResult:
    """Enforce approximate dynamical isometry on a pruned network, data-free, in place.

    Minimises Σ_l ‖(C^l⊙W^l)(C^l⊙W^l)ᵀ − g² I‖_F by gradient descent on the kept weights
    (Lee et al. 2020, arXiv 1906.06307, §4.2 eq. 6; defaults ``steps=10_000``, ``lr=0.1``
    and g = 1 as in their code). The layers' terms are independent, so each layer takes the
    same ``steps`` steps of its own gradient 2 A W / ‖A‖_F, A = W Wᵀ − g² I, computed in
    float64 and masked by ``weight_mask``; pruned weights stay exactly zero and biases are not
    touched. Layers with more outputs than inputs cannot reach A = 0 (W Wᵀ has rank ≤ fan_in);
    they are still moved towards the nearest partial isometry.

    Returns
    -------
    IsometryResult with the per-layer penalties before and after.
    """
    from tqdm.auto import tqdm

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise InvalidInput(f"steps must be an integer >= 0, got {steps!r}")
    lr = positive_float(lr, "lr")
    gain = positive_float(gain, "gain")
    layers = _weight_layers(model)
    names, before, after = [], [], []
    for name, module in tqdm(layers, desc="isometry", disable=not progress, leave=False):
        weight = module.weight
        if not torch.isfinite(weight).all():
            raise InvalidInput(f"layer {name!r}: weight contains NaN or inf")
        mask = _mask_of(module)
        w = weight.detach().to(torch.float64).flatten(1).clone()
        m = None if mask is None else mask.to(torch.float64).flatten(1)
        if m is not None:
            w.mul_(m)
        before.append(float(_penalty(w, gain)[1]))
        for _ in range(steps):
            a, norm = _penalty(w, gain)
            if norm == 0:
                break
            grad = (a @ w).mul_(2.0 / norm)
            if m is not None:
                grad.mul_(m)
            w.sub_(grad, alpha=lr)
        after.append(float(_penalty(w, gain)[1]))
        weight.copy_(w.view_as(weight).to(weight.dtype))
        names.append(f"{name}.weight" if name else "weight")
    return IsometryResult(tuple(names), tuple(before), tuple(after), steps, lr, gain)
