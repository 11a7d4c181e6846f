"""Layer-wise density allocations: how many weights each layer keeps, beside global top-k.

An allocation maps the weight shapes of the pruned layers and a target density d to one
density per layer (:func:`layer_densities`, the closed forms below) and to exact integer
counts (:func:`layer_counts`); :func:`sigprop.prune.selection.select` then ranks the scores
of any method (or random scores) inside each layer (``prune_at_init(..., allocation=...)``).

``"uniform"``
    d_l = d for every layer; count round(d·n_l) per layer (``counting="official"``:
    n_l − ⌊(1−d) n_l⌋), as ``scope="layer"``.
``"erk"``
    Erdős–Rényi-Kernel (Evci et al. 2020, arXiv 1911.11134, Sec. 3): d_l = ε·(Σ_i s_i)/(Π_i s_i)
    over the dimensions s_i of the layer's weight (for a convolution c_out, c_in, k_h, k_w;
    for a linear layer n_out, n_in, which is Erdős–Rényi), with ε such that Σ_l d_l n_l = d N.
    A layer whose d_l would exceed 1 is made dense and ε is recomputed over the others,
    until none exceeds 1 (as their reference code, google-research/rigl ``sparse_utils``).
``"smart_ratios"``
    Su et al. 2020 (arXiv 2009.11094, Sec. 5, "smart ratio"): for the L pruned layers in
    model order l = 1..L, d_l ∝ (L−l+1)² + (L−l+1) (quadratically decreasing with depth);
    with ``variant="vgg"`` divided further by l² (their code's branch for non-ResNet
    architectures). The classifier -- the last layer, if its weight is 2-D -- keeps the
    fixed fraction ``linear_density`` (0.3, their default), the others share the rest of the
    budget. Layers above 1 are made dense and the excess is redistributed proportionally over
    the others (their code moves it to the following layers in order; the totals agree).

Counts: dense layers keep n_l; the others get ⌊d_l n_l⌋ plus one for the largest fractional
parts (ties: model order) until the total is exactly ``kept_count(d, N, counting)``, so
every count is within one of d_l n_l and the kept total is exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from sigprop.nn.masked import check_density
from sigprop.prune.selection import kept_count
from sigprop.validate import InvalidInput

__all__ = ["ALLOCATIONS", "layer_counts", "layer_densities"]

#: allocation names :func:`layer_densities` accepts
ALLOCATIONS = ("uniform", "erk", "smart_ratios")

Shapes = Mapping[str, tuple[int, ...]]


def _sizes(shapes: Shapes) -> dict[str, int]:
    if not isinstance(shapes, Mapping) or not shapes:
        raise InvalidInput("shapes must be a non-empty mapping {layer name: weight shape}")
    out = {}
    for name, shape in shapes.items():
        dims = tuple(int(s) for s in shape)
        if not dims or any(s < 1 for s in dims):
            raise InvalidInput(f"layer {name!r} has an empty weight shape {tuple(shape)}")
        out[name] = math.prod(dims)
    return out


def _water_fill(raw: dict[str, float], sizes: dict[str, int], budget: float) -> dict[str, float]:
    """d_l = min(1, ε raw_l) with Σ d_l n_l = budget: layers above 1 become dense and ε is
    recomputed over the rest (ε only grows, so a dense layer stays dense)."""
    dense: set[str] = set()
    while True:
        rest = [n for n in raw if n not in dense]
        left = budget - sum(sizes[n] for n in dense)
        weight = sum(raw[n] * sizes[n] for n in rest)
        if not rest or weight <= 0:
            eps = 0.0
            break
        eps = left / weight
        over = {n for n in rest if eps * raw[n] > 1.0}
        if not over:
            break
        dense |= over
    return {n: 1.0 if n in dense else eps * raw[n] for n in raw}


def layer_densities(
    allocation: str,
    shapes: Shapes,
    density: float,
    *,
    linear_density: float = 0.3,
    variant: str = "resnet",
) -> dict[str, float]:
    """Per-layer densities of ``allocation`` (module docstring) for weights of ``shapes``
    (``{name: weight shape}``, model order) at overall density ``density``."""
    density = check_density(density)
    sizes = _sizes(shapes)
    total = sum(sizes.values())
    if allocation == "uniform":
        return dict.fromkeys(sizes, density)
    if allocation == "erk":
        raw = {n: sum(shapes[n]) / sizes[n] for n in sizes}
        return _water_fill(raw, sizes, density * total)
    if allocation == "smart_ratios":
        if variant not in ("resnet", "vgg"):
            raise InvalidInput(f"variant must be 'resnet' or 'vgg', got {variant!r}")
        linear_density = check_density(linear_density, "linear_density")
        names = list(sizes)
        L = len(names)
        last = names[-1]
        classifier = len(shapes[last]) == 2 and L > 1
        budget = density * total
        out = {}
        if classifier:
            out[last] = linear_density
            budget -= linear_density * sizes[last]
            if budget < 0:
                raise InvalidInput(
                    f"the classifier alone keeps {linear_density} of its weights, more than "
                    f"density {density} allows overall; lower linear_density"
                )
        raw = {}
        for i, n in enumerate(names, start=1):
            if classifier and n == last:
                continue
            k = L - i + 1
            raw[n] = (k * k + k) / (i * i if variant == "vgg" else 1)
        out.update(_water_fill(raw, sizes, budget))
        return {n: out[n] for n in names}
    raise InvalidInput(f"unknown allocation {allocation!r}; choose one of {', '.join(ALLOCATIONS)}")


def layer_counts(
    allocation: str,
    shapes: Shapes,
    density: float,
    *,
    counting: str = "round",
    **options,
) -> dict[str, int]:
    """Exact kept counts per layer for ``allocation`` (module docstring): within one of
    d_l·n_l each, summing to ``kept_count(density, N, counting)`` (``"uniform"``: per layer
    ``kept_count(density, n_l, counting)``)."""
    sizes = _sizes(shapes)
    if allocation == "uniform":
        check_density(density)
        return {n: kept_count(density, sizes[n], counting) for n in sizes}
    dens = layer_densities(allocation, shapes, density, **options)
    target = kept_count(density, sum(sizes.values()), counting)
    exact = {n: min(1.0, dens[n]) * sizes[n] for n in sizes}
    counts = {n: sizes[n] if dens[n] >= 1.0 else math.floor(exact[n]) for n in sizes}
    short = target - sum(counts.values())
    order = sorted(
        (n for n in sizes if counts[n] < sizes[n]),
        key=lambda n: (-(exact[n] - math.floor(exact[n])), list(sizes).index(n)),
    )
    if short > len(order) or short < 0:
        raise InvalidInput(f"cannot allocate {target} weights over layers of {sizes}")
    for n in order[:short]:
        counts[n] += 1
    return counts
