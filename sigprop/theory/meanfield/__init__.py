"""Mean-field signal propagation: q-map, c-map, fixed points, χ₁, χ_c and depth scales.

For a network h^l = W^l φ(h^{l−1}) + b^l with W_ij ~ N(0, σ_w²/N), b_i ~ N(0, σ_b²)
(σ's are standard deviations), in the infinite-width limit (Poole et al. 2016,
arXiv 1606.05340; Schoenholz et al. 2017, arXiv 1611.01232):

* variance map (Poole eq. 3):   V(q) = σ_w² E[φ(√q z)²] + σ_b²,  fixed point q* = V(q*);
* correlation map (Poole eq. 5): C(c) = (σ_w² E[φ(u₁)φ(u₂)] + σ_b²)/q*, Var u_i = q*,
  Corr(u₁, u₂) = c, so C(1) = 1;
* χ₁ = C′(1) = σ_w² E[φ′(√q* z)²] (Poole eq. 7, Schoenholz eq. 5): ordered for χ₁ < 1
  (c* = 1 attracts), chaotic for χ₁ > 1 (a stable c* < 1), edge of chaos at χ₁ = 1;
* depth scales (Schoenholz eqs. 6–9): ξ_q = −1/log V′(q*) with
  V′(q) = σ_w² E[φ′² + φφ″] (Stein's lemma; Schoenholz eq. 7), and ξ_c = −1/log χ_c with
  χ_c = C′(c*) = σ_w² E[φ′(u₁)φ′(u₂)] at (q*, c*) (Schoenholz eq. 9); in the ordered phase
  c* = 1 and ξ_c = −1/log χ₁.

Every function broadcasts over numpy arrays of σ_w, σ_b (and q, c). Closed forms are used
for the ReLU family (Cho & Saul 2009, arc-cosine kernel), linear and erf (Williams 1997); other activations use the composite
Gauss quadrature of :mod:`sigprop.theory.gaussian` (1-D maps) and its 2-D form (c-map).

Which fixed point
-----------------
q* is the fixed point reached from small inputs (the limit q⁰ → 0⁺ of V^l(q⁰)): the
smallest root of V(q) = q, or 0 when σ_b = 0, φ(0) = 0 and V(q) < q just above 0. For
positively homogeneous φ (ReLU family, linear) with σ_b = 0 at σ_w² E[φ(z)²] = 1 every q is a
fixed point (q^l = q⁰) and :func:`q_star` raises; where q^l grows without bound (e.g. ELU
with σ_w² ≥ 2, ReLU with σ_w² > 2) it raises too.
"""

from sigprop.theory.meanfield.correlation import (
    DepthScales,
    c_map,
    c_star,
    chi_c,
    depth_scales,
    kernel,
)
from sigprop.theory.meanfield.expectations import MomentTable, moment_table, moments
from sigprop.theory.meanfield.fixed_point import (
    FixedPointNotUnique,
    NoFixedPoint,
    chi1,
    q_map,
    q_map_derivative,
    q_star,
)

__all__ = [
    "FixedPointNotUnique",
    "NoFixedPoint",
    "q_map",
    "q_star",
    "c_map",
    "c_star",
    "chi1",
    "chi_c",
    "depth_scales",
    "DepthScales",
    "q_map_derivative",
    "moments",
    "kernel",
    "MomentTable",
    "moment_table",
]
