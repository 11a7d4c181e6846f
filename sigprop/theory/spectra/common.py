"""Shared pieces of the spectra modules: argument checks and the weight ensembles (the
Gauss–Legendre rule is ``sigprop.theory.gaussian.legendre_rule``)."""

from __future__ import annotations

from typing import Any

from sigprop.validate import InvalidInput, positive_int

#: Weight ensembles with a known S-transform of WWᵀ.
WEIGHT_KINDS = ("gaussian", "orthogonal")

#: S-transform coefficient s₁ of WWᵀ/σ_w² (S = σ_w⁻²(1 + s₁ z + …)), arXiv 1711.04735 eq. 15.
S1 = {"gaussian": -1.0, "orthogonal": 0.0}


def check_depth(depth: Any) -> int:
    depth = positive_int(depth, "depth")
    return int(depth)


def check_weights(weights: str) -> str:
    if weights not in WEIGHT_KINDS:
        raise InvalidInput(f"weights must be one of {WEIGHT_KINDS}, got {weights!r}")
    return weights
