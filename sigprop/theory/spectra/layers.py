"""Per-layer inputs of the spectra: activations, laws of φ′², σ_w and q per layer."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from sigprop.theory.spectra.derivative_law import DerivativeLaw, derivative_law
from sigprop.validate import InvalidInput


def per_layer_activations(activation: Any, depth: int) -> tuple[list[Any], np.ndarray]:
    """Unique activations and each layer's index into them.

    ``activation`` is one spec for every layer, or a list/tuple of ``depth`` specs (e.g.
    ``"linear"`` for a layer without a nonlinearity, D^l = I).
    """
    if isinstance(activation, list | tuple):
        if len(activation) != depth:
            raise InvalidInput(f"got {len(activation)} activations for {depth} layers")
        specs = list(activation)
    else:
        specs = [activation] * depth
    unique: list[Any] = []
    index = np.empty(depth, dtype=np.int64)
    for i, spec in enumerate(specs):
        for j, u in enumerate(unique):
            if u is spec or (type(u) is type(spec) and u == spec):
                index[i] = j
                break
        else:
            unique.append(spec)
            index[i] = len(unique) - 1
    return unique, index


def layer_laws(
    activation: Any, q: np.ndarray, n_nodes: int
) -> tuple[list[DerivativeLaw], np.ndarray]:
    """Distinct laws of φ_l′(h_l)² (one per distinct activation and q) and each layer's index."""
    acts, act_index = per_layer_activations(activation, q.size)
    keys: dict[tuple[int, float], int] = {}
    laws: list[DerivativeLaw] = []
    index = np.empty(q.size, dtype=np.int64)
    for i, (a, qi) in enumerate(zip(act_index, q)):
        key = (int(a), float(qi))
        if key not in keys:
            keys[key] = len(laws)
            laws.append(derivative_law(acts[a], float(qi), n_nodes))
        index[i] = keys[key]
    return laws, index


def layer_arrays(sigma_w: Any, q: Any) -> tuple[np.ndarray, np.ndarray]:
    sw = np.atleast_1d(np.asarray(sigma_w, dtype=np.float64))
    qq = np.atleast_1d(np.asarray(q, dtype=np.float64))
    if sw.ndim != 1 or qq.ndim != 1:
        raise InvalidInput("sigma_w and q must be scalars or 1-D per-layer arrays")
    if sw.size == 1 and qq.size > 1:
        sw = np.full(qq.shape, sw[0])
    if qq.size == 1 and sw.size > 1:
        qq = np.full(sw.shape, qq[0])
    if sw.size != qq.size:
        raise InvalidInput(f"sigma_w has {sw.size} layers but q has {qq.size}")
    if sw.size == 0:
        raise InvalidInput("at least one layer is needed")
    if not np.all(np.isfinite(sw)) or np.any(sw < 0):
        raise InvalidInput(f"sigma_w must be finite and >= 0, got {sw}")
    if not np.all(np.isfinite(qq)) or np.any(qq < 0):
        raise InvalidInput(f"q (pre-activation variances) must be finite and >= 0, got {qq}")
    return sw, qq


def exp_or_inf(x: float) -> float:
    """exp(x) with ``inf`` instead of OverflowError."""
    return math.exp(x) if x < 709.78 else math.inf


def fixed_point_q(activation: Any, sigma_w: float, sigma_b: float, q: Any) -> float:
    """q given, else q*(σ_w, σ_b); for a scale-free law of φ′ (ReLU family, linear) any q.

    ``meanfield.q_star`` has no unique answer where every q is a fixed point (e.g. ReLU at
    σ_w² = 2, σ_b = 0) or none is finite; when the law of φ′(h)² does not depend on q (φ′ piecewise constant with
    kinks only at 0) the Jacobian spectrum does not either, and q = 1 is used.
    """
    if q is not None:
        return float(q)
    from sigprop.theory import meanfield

    try:
        return float(meanfield.q_star(activation, sigma_w, sigma_b))
    except (meanfield.NoFixedPoint, meanfield.FixedPointNotUnique):
        one, two = derivative_law(activation, 1.0), derivative_law(activation, 2.0)
        scale_free = (
            one.nodes.size == 0
            and two.nodes.size == 0
            and np.array_equal(one.atoms, two.atoms)
            and np.allclose(one.atom_masses, two.atom_masses, rtol=0.0, atol=1e-15)
        )
        if not scale_free:
            raise
        return 1.0
