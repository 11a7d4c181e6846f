"""The law of φ′(h)², h ~ N(0, q): exact atoms plus a quadrature of its continuous part (the
S-transform input of the (D^l)² factors, arXiv 1711.04735 eq. 11)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import special

from sigprop._json import to_jsonable
from sigprop.theory.spectra.common import (
    leggauss,
)
from sigprop.validate import InvalidInput

# --------------------------------------------------------------------------------------
# The law of φ′(h)², h ~ N(0, q)
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DerivativeLaw:
    """Law of λ = φ′(h)², h ~ N(0, q): the spectral law of (D^l)² in arXiv 1711.04735 §2.3.

    Fields
    ------
    q : float
        Variance of the pre-activation h.
    atoms, atom_masses : ndarray, shape (n_atoms,)
        Exact point masses: values of λ on intervals between kinks where φ′ is constant
        (ReLU: λ ∈ {0, 1} with mass ½ each), merged when equal.
    nodes, node_weights : ndarray, shape (n_nodes,)
        Gauss–Legendre quadrature (in h, against the N(0, q) density) of the continuous
        part: nodes are values of λ, weights are probabilities; empty when φ′ is
        piecewise constant.
    """

    q: float
    atoms: np.ndarray
    atom_masses: np.ndarray
    nodes: np.ndarray
    node_weights: np.ndarray

    @property
    def support(self) -> tuple[np.ndarray, np.ndarray]:
        """All support points and their weights (atoms first, then quadrature nodes)."""
        return (
            np.concatenate([self.atoms, self.nodes]),
            np.concatenate([self.atom_masses, self.node_weights]),
        )

    def moment(self, k: int) -> float:
        """μ_k = E[φ′(h)^{2k}] (arXiv 1711.04735 eq. 14) from this discretisation."""
        lam, p = self.support
        return float(np.sum(p * lam**k))

    @property
    def zero_mass(self) -> float:
        """P(φ′(h) = 0): the mass of the exact atom at 0 (0 if there is none)."""
        return float(np.sum(self.atom_masses[self.atoms == 0.0]))

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self, type(self).__name__)


def get_activation(activation: Any):
    from sigprop.theory.activations import get_activation

    return get_activation(activation)


#: Largest Gauss–Legendre rule on one piece (numpy's rule costs O(n²) memory): past it,
#: at q ≳ 230 for a smooth activation without kinks, the law is refused rather than under-resolved.
MAX_NODES = 2048


def derivative_law(activation: Any, q: float, n_nodes: int = 128) -> DerivativeLaw:
    """Discretise the law of φ′(h)², h ~ N(0, q), for the S-transform of (D^l)².

    The real line is split at the activation's kinks (``Activation.kinks``) and truncated
    at ±8.5√q (Gaussian mass beyond: 1.9e-17). On a piece where φ′ is constant (checked at
    the quadrature nodes to 1e-13 relative) the piece is an exact atom carrying its Gaussian
    probability; elsewhere the piece gets a Gauss–Legendre rule in h against the N(0, q)
    density with max(n_nodes, 16 × half-width) nodes, at most :data:`MAX_NODES` (half-width in units of h: enough for
    complex singularities of φ′ at distance ≳ π/2 from the real axis, as for tanh, where
    μ_k come out to ~1e-15). It converges exponentially for φ′ analytic on the piece, only
    algebraically for activations with undeclared kinks. q = 0 gives the atom φ′(0)².
    """
    act = get_activation(activation)
    q = float(q)
    if not np.isfinite(q) or q < 0:
        raise InvalidInput(f"q (pre-activation variance) must be finite and >= 0, got {q!r}")
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int | np.integer) or n_nodes < 8:
        raise InvalidInput(f"n_nodes must be an integer >= 8, got {n_nodes!r}")
    empty = np.zeros(0)

    def lam(h: np.ndarray) -> np.ndarray:
        return np.asarray(act.dphi(h), dtype=np.float64) ** 2

    if q == 0.0:
        return DerivativeLaw(0.0, lam(np.zeros(1)), np.ones(1), empty, empty)
    sq = math.sqrt(q)
    half_width = 8.5 * sq
    kinks = sorted(
        {float(k) for k in (getattr(act, "kinks", ()) or ()) if abs(float(k)) < half_width}
    )
    cuts = np.array([-half_width, *kinks, half_width])
    atoms: dict[float, float] = {}
    nodes, weights = [], []
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        if b <= a:
            continue
        # constancy is checked on n_nodes nodes first: a constant piece (ReLU family,
        # linear) is an atom at any q, without the wide rule below (whose size grows as √q)
        gl_x, gl_w = leggauss(int(n_nodes))
        h = a + 0.5 * (b - a) * (gl_x + 1.0)
        vals = lam(h)
        if not np.all(np.isfinite(vals)):
            raise InvalidInput(f"activation {act.name!r}: φ′ is not finite on N(0, {q})")
        constant = np.ptp(vals) <= 1e-13 * max(1.0, float(np.max(np.abs(vals))))
        n_wide = int(8.0 * (b - a))
        if not constant and n_wide > int(n_nodes):
            if n_wide > MAX_NODES:
                raise InvalidInput(
                    f"activation {act.name!r} at q = {q:.3g}: the derivative law needs "
                    f"{n_wide} Gauss–Legendre nodes on one piece (at most {MAX_NODES})"
                )
            gl_x, gl_w = leggauss(n_wide)
            h = a + 0.5 * (b - a) * (gl_x + 1.0)
            vals = lam(h)
            if not np.all(np.isfinite(vals)):
                raise InvalidInput(f"activation {act.name!r}: φ′ is not finite on N(0, {q})")
        if constant:
            # Exact probability of the piece; the outer pieces extend to ±∞.
            lo = -np.inf if i == 0 else a / sq
            hi = np.inf if i == len(cuts) - 2 else b / sq
            key = float(np.median(vals))
            atoms[key] = atoms.get(key, 0.0) + float(special.ndtr(hi) - special.ndtr(lo))
        else:
            pdf = np.exp(-0.5 * h * h / q) / math.sqrt(2.0 * math.pi * q)
            nodes.append(vals)
            weights.append(0.5 * (b - a) * gl_w * pdf)
    atom_vals = np.array(sorted(atoms), dtype=np.float64)
    atom_mass = np.array([atoms[k] for k in sorted(atoms)], dtype=np.float64)
    return DerivativeLaw(
        q,
        atom_vals,
        atom_mass,
        np.concatenate(nodes) if nodes else empty,
        np.concatenate(weights) if weights else empty,
    )
