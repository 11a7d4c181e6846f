"""Free-probability spectra of input–output Jacobians.

For a deep network h^l = W^l φ(h^{l-1}) + b^l the input–output Jacobian is
J = D^L W^L ⋯ D^1 W^1 with D^l = diag φ′(h^l). At large width the W^l and the D^l are
asymptotically free, so the law of the squared singular values of J (the eigenvalues of
JJᵀ) follows from the S-transforms of its factors (Pennington, Schoenholz & Ganguli 2017,
arXiv 1711.04735, eq. 8–11; 2018, arXiv 1802.09979, §2):

    S_{JJᵀ}(z) = Π_l S_{W^l W^lᵀ}(z) · S_{(D^l)²}(z),
    S(z) = (1 + z) / (z M⁻¹(z)),  M(x) = x G(x) − 1 = Σ_{k≥1} m_k x^{-k},

with S_{WWᵀ}(z) = 1/(σ_w²(1 + z)) for Gaussian and 1/σ_w² for (scaled) orthogonal weights.

What is here
------------
* The Fuss–Catalan law (linear Gaussian networks): :func:`fuss_catalan_moments`,
  :func:`fuss_catalan_edge`, :func:`fuss_catalan_density`, :func:`fuss_catalan_cdf`.
* The law of φ′(h)², h ~ N(0, q) as exact atoms plus a quadrature of its continuous part
  (the nodes of :func:`sigprop.theory.gaussian.quadrature_rule`): :func:`derivative_law`.
* The first two moments of JJᵀ for equal layers (:func:`jacobian_moments`) and for
  per-layer σ_w, q (:func:`jacobian_moments_layers`; a pruned layer of density ρ enters
  through its effective σ_w² = ρσ_w², see :mod:`sigprop.theory.sparse`).
* The full density of JJᵀ by solving the S-transform equations numerically near the real
  axis (:func:`jacobian_density`, :func:`jacobian_density_layers`).

All moments are those of the normalised trace (1/N) tr (JJᵀ)^k of square layers of width
N → ∞. Everything is float64 and numpy/scipy only.
"""

from sigprop.theory.spectra.common import WEIGHT_KINDS
from sigprop.theory.spectra.density import (
    JacobianDensity,
    jacobian_density,
    jacobian_density_layers,
)
from sigprop.theory.spectra.derivative_law import DerivativeLaw, derivative_law
from sigprop.theory.spectra.fuss_catalan import (
    _fc_phi_of_x,  # noqa: F401 - tests check the inverse map
    _fc_u,  # noqa: F401
    fuss_catalan_cdf,
    fuss_catalan_density,
    fuss_catalan_edge,
    fuss_catalan_moments,
)
from sigprop.theory.spectra.moments import (
    JacobianMoments,
    jacobian_moments,
    jacobian_moments_layers,
)

__all__ = [
    "WEIGHT_KINDS",
    "DerivativeLaw",
    "JacobianDensity",
    "JacobianMoments",
    "derivative_law",
    "fuss_catalan_cdf",
    "fuss_catalan_density",
    "fuss_catalan_edge",
    "fuss_catalan_moments",
    "jacobian_density",
    "jacobian_density_layers",
    "jacobian_moments",
    "jacobian_moments_layers",
]
