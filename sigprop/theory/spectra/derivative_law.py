"""The law of φ′(h)², h ~ N(0, q): exact atoms plus a quadrature of its continuous part (the
S-transform input of the (D^l)² factors, arXiv 1711.04735 eq. 11)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
from scipy import special

from sigprop._json import to_jsonable
from sigprop.theory import gaussian
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
        Quadrature of the continuous part (``gaussian.quadrature_rule`` in z = h/√q, the
        N(0, 1) density in the weights): nodes are values of λ, weights are probabilities
        (> 0: the rule's collapsed panels are left out); empty when φ′ is piecewise constant.
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


def derivative_law(activation: Any, q: float, n_nodes: int = 128) -> DerivativeLaw:
    """Discretise the law of φ′(h)², h ~ N(0, q), for the S-transform of (D^l)².

    The real line is split at the activation's kinks (``Activation.kinks``) inside the
    quadrature window |h| ≤ 9√q (Gaussian mass beyond: 2.3e-19). A piece on which φ′ is
    constant (checked to 1e-13 relative at ``n_nodes`` Gauss–Legendre nodes spread over the
    piece's part of the window and at the rule's nodes in it) is an exact atom carrying its
    Gaussian probability, the outer pieces extending to ±∞ (ReLU family, linear: exact at
    any q). The other pieces take their nodes from :func:`sigprop.theory.gaussian.quadrature_rule`
    (Gauss–Legendre panels uniform in z = h/√q plus a geometric ladder in h, split at the
    kinks, the N(0, 1) density in the weights; Poole et al. 2016, arXiv 1606.05340, eq. 3
    for the integrals ∫Dz f(√q z)): a rule of the same size at every q (of which the nodes
    of positive weight are kept, 120 to 380 for a smooth φ′ at q = 1e-3 to 1e6), round-off accuracy
    (μ_k to ~1e-15) for φ′ analytic on each piece, only algebraic convergence for
    activations with undeclared kinks. A law whose moments μ₁, μ₂ are not resolved within
    the window (φ′² growing like exp(h²/2q) or faster) is refused. q = 0 gives the atom
    φ′(0)².
    """
    act = get_activation(activation)
    q = float(q)
    if not np.isfinite(q) or q < 0:
        raise InvalidInput(f"q (pre-activation variance) must be finite and >= 0, got {q!r}")
    if isinstance(n_nodes, bool) or not isinstance(n_nodes, int | np.integer) or n_nodes < 8:
        raise InvalidInput(f"n_nodes must be an integer >= 8, got {n_nodes!r}")
    empty = np.zeros(0)

    def lam(h: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            vals = np.asarray(act.dphi(h), dtype=np.float64) ** 2
        if not np.all(np.isfinite(vals)):
            raise InvalidInput(f"activation {act.name!r}: φ′ is not finite on N(0, {q})")
        return vals

    if q == 0.0:
        return DerivativeLaw(0.0, lam(np.zeros(1)), np.ones(1), empty, empty)
    sq = math.sqrt(q)
    reach = gaussian.ZMAX * sq
    kinks = sorted({float(k) for k in (getattr(act, "kinks", ()) or ()) if abs(float(k)) < reach})
    z, w = gaussian.quadrature_rule(q, 0.0, kinks)
    h = sq * z
    vals = lam(h)
    # each node lies inside one piece (panels end at the kinks); a collapsed panel's
    # zero-weight nodes may sit on a kink and take no part in the constancy check
    piece = np.searchsorted(np.asarray(kinks), h)
    probe_x, _ = gaussian.legendre_rule(int(n_nodes))
    cuts = [-reach, *kinks, reach]
    atoms: dict[float, float] = {}
    smooth = np.zeros(h.size, dtype=bool)
    for i, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        mine = piece == i
        probe = lam(a + 0.5 * (b - a) * (probe_x + 1.0))
        seen = np.concatenate([probe, vals[mine & (w > 0)]])
        if np.ptp(seen) <= 1e-13 * max(1.0, float(np.max(np.abs(seen)))):
            # exact probability of the piece; the outer pieces extend to ±∞
            lo = -np.inf if i == 0 else a / sq
            hi = np.inf if i == len(cuts) - 2 else b / sq
            key = float(np.median(probe))
            atoms[key] = atoms.get(key, 0.0) + float(special.ndtr(hi) - special.ndtr(lo))
        else:
            smooth |= mine
    smooth &= w > 0  # the rule's collapsed panels (edges clipped at |z| = 9) carry nothing
    nodes, weights = vals[smooth], w[smooth]
    if nodes.size:
        wf = weights * np.stack([nodes, nodes * nodes])
        gaussian.require_resolved(z[smooth], wf, gaussian.ZMAX, "E[φ′(h)^2k], k = 1, 2", weights)
    keys = sorted(atoms)
    return DerivativeLaw(
        q,
        np.array(keys, dtype=np.float64),
        np.array([atoms[k] for k in keys], dtype=np.float64),
        nodes,
        weights,
    )
