"""The density of JJᵀ from the S-transform equations (arXiv 1711.04735 eq. 8–11; 1802.09979 §2)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sigprop._json import to_jsonable
from sigprop.theory.spectra.common import (
    check_depth,
    check_weights,
)
from sigprop.theory.spectra.derivative_law import DerivativeLaw
from sigprop.theory.spectra.free_product import solve_free_product, stack_laws
from sigprop.theory.spectra.layers import fixed_point_q, layer_arrays, layer_laws
from sigprop.theory.spectra.moments import jacobian_moments_layers
from sigprop.validate import InvalidInput

# --------------------------------------------------------------------------------------
# Density of JJᵀ from the S-transform
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class JacobianDensity:
    """Law of the squared singular values of J: point masses plus a continuous density.

    Fields
    ------
    x : ndarray, shape (n,)
        Grid (> 0) on which the continuous part is evaluated.
    density : ndarray, shape (n,)
        Continuous part ρ(x) = −Im G(x + iε)/π minus the exact atoms' contributions.
    atoms, atom_masses : ndarray
        Exact point masses of the free product: at 0 with mass max_l P(φ′(h_l) = 0), and at
        Π_l σ_l² a_l with mass Σ_l P(λ_l = a_l) − (L − 1) for orthogonal weights
        (Belinschi's atom rule for free multiplicative convolution).
    m1, m2 : float
        Exact first two moments (:func:`jacobian_moments_layers`), for checks.
    edge : float
        Upper edge of the support of the continuous part, located numerically (0 if none).
    eps : float
        Imaginary offset ε used to approach the real axis.
    max_residual : float
        Largest residual of the S-transform equations over the grid.
    """

    x: np.ndarray
    density: np.ndarray
    atoms: np.ndarray
    atom_masses: np.ndarray
    m1: float
    m2: float
    edge: float
    eps: float
    max_residual: float

    def _grid_mass(self) -> tuple[np.ndarray, np.ndarray]:
        """(log x, cumulative mass of the continuous part from x[0]) on the grid: x·ρ(x)
        linear in log x between grid points, integrated exactly."""
        u = np.log(self.x)
        f = self.density * self.x
        return u, np.concatenate([[0.0], np.cumsum(0.5 * (f[1:] + f[:-1]) * np.diff(u))])

    def continuous_mass_below(self) -> float:
        """Mass of the continuous part on (0, x[0]).

        When the grid reaches (nearly) the upper edge of the support, as the default grid
        does, it is what the total mass leaves: 1 − Σ atoms − ∫_{x[0]}^{x[-1]} ρ − the mass
        beyond x[-1], the latter ≈ (2/3) ρ(x[-1]) (edge − x[-1]) for a density vanishing like
        a square root at the edge and required below 1e-3. Otherwise it is extrapolated from
        the local power law ρ ∝ x^{−β}, β estimated from the first two grid points (clipped
        to [0, 0.999]; for the Fuss–Catalan law β → L/(L+1) at 0), which is sensitive to
        β near 1 (Fuss–Catalan, L = 30, grid from 1e-6·edge: 0.93 against 0.71).
        """
        if not self.x.size:
            return 0.0
        tail = 2.0 / 3.0 * float(self.density[-1]) * max(self.edge - float(self.x[-1]), 0.0)
        if self.edge > 0 and self.x[-1] >= 0.5 * self.edge and 0.0 <= tail < 1e-3:
            grid = float(self._grid_mass()[1][-1])
            rest = 1.0 - float(np.sum(self.atom_masses)) - grid - tail
            if 0.0 <= rest <= 1.0:
                return rest
        if self.x.size < 2 or self.density[0] <= 0 or self.density[1] <= 0:
            return float(self.x[0] * self.density[0])
        beta = -math.log(self.density[1] / self.density[0]) / math.log(self.x[1] / self.x[0])
        beta = min(max(beta, 0.0), 0.999)
        return float(self.x[0] * self.density[0] / (1.0 - beta))

    def cdf(self, t: Any) -> np.ndarray:
        """P(λ ≤ t): atoms plus the integral of the continuous part.

        x·ρ(x) is interpolated linearly in log x between grid points and integrated exactly
        (so power laws ρ ∝ x^{−β}, which dominate near 0 for deep networks, are integrated
        accurately even on the sparse geometric part of the default grid); the mass M₀ on
        (0, x[0]) comes from :meth:`continuous_mass_below` and is spread by a power law,
        F(t) = M₀ (t/x[0])^{1−β} for t < x[0] with 1 − β = x[0]ρ(x[0])/M₀, the one
        density ρ ∝ x^{−β} that holds that mass and matches ρ at x[0] (so the CDF and its
        slope are continuous there); beyond the last grid point the continuous part adds
        nothing.
        """
        t = np.asarray(t, dtype=np.float64)
        out = np.zeros(t.shape)
        if self.x.size:
            u, grid_mass = self._grid_mass()
            f = self.density * self.x
            cum = self.continuous_mass_below() + grid_mass
            below = t < self.x[0]
            # 1 − β of the power law ρ ∝ x^{−β} carrying the mass cum[0] below x[0] with the
            # density ρ(x[0]) at x[0] (a straight line, exponent 1, if either is 0)
            gamma = f[0] / cum[0] if cum[0] > 0 and f[0] > 0 else 1.0
            ratio = np.clip(t, 0.0, self.x[0]) / self.x[0]
            out = np.where(below, cum[0] * ratio**gamma, cum[-1])
            mid = (~below) & (t < self.x[-1])
            if np.any(mid):
                tu = np.log(t[mid])
                i = np.clip(np.searchsorted(u, tu, side="right") - 1, 0, u.size - 2)
                frac = (tu - u[i]) / (u[i + 1] - u[i])
                ft = f[i] + frac * (f[i + 1] - f[i])
                out[mid] = cum[i] + 0.5 * (f[i] + ft) * (tu - u[i])
        for a, m in zip(self.atoms, self.atom_masses):
            out = out + m * (t >= a)
        return np.clip(out, 0.0, 1.0)

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self, type(self).__name__)


def _free_atoms(laws: Sequence[DerivativeLaw], sig2: np.ndarray, weights: str):
    """Point masses of the free product (Belinschi 2003; arXiv 1711.04735 does not need them).

    μ ⊠ ν has an atom at 0 of mass max(μ{0}, ν{0}) and, for a, b ≠ 0, an atom at ab of mass
    max(0, μ{a} + ν{b} − 1). WWᵀ has no atom for square Gaussian W and is σ² δ for
    orthogonal W.
    """
    zero = max(law.zero_mass for law in laws)
    atoms: dict[float, float] = {}
    if weights == "orthogonal":
        current = {1.0: 1.0}
        for law, s2 in zip(laws, sig2):
            nxt: dict[float, float] = {}
            for a, ma in current.items():
                for b, mb in zip(law.atoms, law.atom_masses):
                    if b == 0.0:
                        continue
                    m = ma + mb - 1.0
                    if m > 1e-12:
                        key = a * b * s2
                        nxt[key] = nxt.get(key, 0.0) + m
            current = nxt
            if not current:
                break
        atoms.update(current)
    if zero > 0.0:
        atoms[0.0] = atoms.get(0.0, 0.0) + zero
    keys = sorted(atoms)
    return np.array(keys, dtype=np.float64), np.array([atoms[k] for k in keys])


def _default_grid(edge: float, depth: int, n_points: int, weights: str) -> np.ndarray:
    """A quarter of the points geometric on [x_min, 1e-2·edge], the rest linear up to edge.

    Near 0 the density of a depth-L Gaussian product behaves like the Fuss–Catalan one,
    ρ ∝ x^{−L/(L+1)}, whose mass below x is ≈ (x/edge)^{1/(L+1)}; x_min makes that 1e-4
    (floored at 1e-300·edge, which leaves ≈ 2e-4 at L = 80, and at 1e-280 absolute, so
    that ε·x stays a normal float for any edge above 1e-277). For orthogonal weights x_min
    is floored at 1e-12·edge: there the discretised law of φ′² (finite tails) leaves
    spurious, negligible structure at far smaller x, and the mass below x_min is
    extrapolated (:meth:`JacobianDensity.continuous_mass_below`).
    """
    n_geo = max(n_points // 4, 2)
    x_min = max(1e-4 ** (depth + 1), 1e-300 if weights == "gaussian" else 1e-12)
    x_min = min(max(x_min, 1e-280 / edge), 1e-3)
    geo = np.geomspace(x_min, 1e-2, n_geo, endpoint=False)
    lin = np.linspace(1e-2, 1.0, n_points - n_geo)
    return edge * np.concatenate([geo, lin])


def jacobian_density_layers(
    activation: Any,
    sigma_w: Any,
    q: Any,
    weights: str = "gaussian",
    *,
    x: Any = None,
    n_points: int = 400,
    rel_eps: float = 1e-7,
    n_nodes: int = 128,
) -> JacobianDensity:
    """Density of the squared singular values of J = Π_l D^l W^l, per-layer σ_w and q.

    Solves S_{JJᵀ}(z) = Π_l S_{W^lW^lᵀ}(z) S_{(D^l)²}(z) (arXiv 1711.04735 eq. 11;
    arXiv 1802.09979 §2) for z = M_J(x + iε) at each grid point, with the S-transform of
    (D^l)² taken from the law of φ′(h_l)², h_l ~ N(0, q_l) (:func:`derivative_law`: exact
    atoms plus the nodes of ``gaussian.quadrature_rule``), and reads off
    ρ(x) = −Im G(x + iε)/π, G(x) = (1 + M_J(x))/x, with the exact atoms removed.

    Parameters
    ----------
    activation : activation spec (``activations.get_activation``), or a list of L specs.
    sigma_w, q : float or array (L,)
        Per-layer weight σ_w (effective σ_w for masked layers) and pre-activation variance.
    weights : ``"gaussian"`` or ``"orthogonal"``.
    x : array, optional
        Grid (> 0). By default ``n_points`` points on (0, edge], a quarter of them
        geometric from far below (see ``_default_grid``: the density of a deep product
        piles up at 0) to 1e-2·edge, with the upper edge of the support located
        numerically.
    rel_eps : float
        ε = rel_eps · x: the density is the Poisson smoothing of the exact one at that
        scale (relative error about rel_eps in the bulk, larger within ~√ε of an edge).
    n_nodes : int
        Gauss–Legendre probe points per piece of the law of φ′² in its test for a constant
        φ′ (the quadrature itself is ``gaussian.quadrature_rule``, of a fixed size).
    """
    weights = check_weights(weights)
    sw, qq = layer_arrays(sigma_w, q)
    if not (0.0 < float(rel_eps) < 1e-2):
        raise InvalidInput(f"rel_eps must lie in (0, 1e-2), got {rel_eps!r}")
    if isinstance(n_points, bool) or not isinstance(n_points, int | np.integer) or n_points < 8:
        raise InvalidInput(f"n_points must be an integer >= 8, got {n_points!r}")
    moments = jacobian_moments_layers(activation, sw, qq, weights)
    if np.any(sw == 0):
        raise InvalidInput("sigma_w = 0 on some layer: the Jacobian vanishes identically")
    law_list, inverse = layer_laws(activation, qq, n_nodes)
    per_layer = [law_list[i] for i in inverse]
    atoms, atom_masses = _free_atoms(per_layer, sw**2, weights)
    mult = np.bincount(inverse, minlength=len(law_list)).astype(np.float64)
    laws = [law.support for law in law_list]
    stacked = stack_laws(laws)  # once: every path group and retry reads the same rows
    mu = np.array([[law.moment(1), law.moment(2)] for law in law_list])
    depth = sw.size
    n_gauss = depth if weights == "gaussian" else 0
    log_sig2_sum = float(np.sum(np.log(sw**2)))
    # Rigorous bound on the spectrum: ‖J‖² ≤ Π ‖D^l‖² ‖W^l‖², ‖WWᵀ‖ = 4σ² (square Gaussian).
    lam_max = np.array([float(np.max(np.abs(s[0]))) for s in laws])[inverse]
    bound = float(np.exp(np.sum(np.log((4.0 if n_gauss else 1.0) * sw**2 * lam_max))))
    # Start the continuation well beyond the bulk (m2/m1 is its scale; the Fuss–Catalan
    # edge is about e·m2/m1), where the large-|x| expansions of M are accurate.
    y_start = 100.0 * moments.m2 / moments.m1

    def solve(xs: np.ndarray, eps: float = rel_eps) -> tuple[np.ndarray, np.ndarray]:
        xc = xs + 1j * eps * xs
        args = (stacked, mult, log_sig2_sum, n_gauss, mu, moments.m1, moments.m2, y_start)
        _, zp1, resid = solve_free_product(xc, *args)
        retry = ~(resid <= 1e-8)
        if np.any(retry):  # a finer continuation with more Newton steps for stragglers
            _, zp1[retry], resid[retry] = solve_free_product(xc[retry], *args, 16, 40)
        g = zp1 / xc
        for a, m in zip(atoms, atom_masses):
            g = g - m / (xc - a)
        return np.maximum(-g.imag / np.pi, 0.0), resid

    cont_mass = 1.0 - float(np.sum(atom_masses))
    if cont_mass <= 1e-12:
        grid = np.asarray(x, dtype=np.float64) if x is not None else np.zeros(0)
        if grid.size and np.any(grid <= 0):
            raise InvalidInput("the grid x must be > 0")
        return JacobianDensity(
            x=grid,
            density=np.zeros(grid.shape),
            atoms=atoms,
            atom_masses=atom_masses,
            m1=moments.m1,
            m2=moments.m2,
            edge=0.0,
            eps=float(rel_eps),
            max_residual=0.0,
        )
    # Upper edge: outside the support −Im G(x + iε)/π is O(ε) (it drops 1e4-fold with ε),
    # inside it converges as ε → 0. Bracket from the mean of the continuous part (inside
    # its support) to the norm bound (capped at 1e8·m2/m1), refined by three vectorised
    # 64-point probes.
    inside = (moments.m1 - float(np.sum(atoms * atom_masses))) / cont_mass
    lo, hi = math.log(inside), math.log(min(bound * 1.01, 1e6 * y_start))
    for _ in range(3):
        probe = np.exp(np.linspace(lo, hi, 64))
        fine = solve(probe, 1e-4 * rel_eps)[0]
        coarse = solve(probe, rel_eps)[0]
        out = ~(fine >= 0.5 * coarse)  # a failed (non-finite) far point counts as outside
        first_out = int(np.argmax(out)) if np.any(out) else probe.size - 1
        lo, hi = math.log(probe[max(first_out - 1, 0)]), math.log(probe[first_out])
    edge = math.exp(hi)
    if x is None:
        grid = _default_grid(edge, depth, int(n_points), weights)
    else:
        grid = np.asarray(x, dtype=np.float64)
        if grid.ndim != 1 or grid.size == 0 or np.any(~np.isfinite(grid)) or np.any(grid <= 0):
            raise InvalidInput("the grid x must be a non-empty 1-D array of finite values > 0")
    density, resid = solve(grid)
    if not np.all(np.isfinite(resid)) or np.max(resid) > 1e-8:
        bad = grid[~(resid <= 1e-8)]
        raise RuntimeError(
            f"the S-transform equations did not converge at {bad.size} grid points "
            f"(first x = {bad[0]:.6g}); try a larger rel_eps or a coarser grid"
        )
    return JacobianDensity(
        x=grid,
        density=density,
        atoms=atoms,
        atom_masses=atom_masses,
        m1=moments.m1,
        m2=moments.m2,
        edge=edge,
        eps=float(rel_eps),
        max_residual=float(np.max(resid)),
    )


def jacobian_density(
    activation: Any,
    sigma_w: float,
    sigma_b: float,
    depth: int,
    weights: str = "gaussian",
    *,
    q: float | None = None,
    x: Any = None,
    n_points: int = 400,
    rel_eps: float = 1e-7,
    n_nodes: int = 128,
) -> JacobianDensity:
    """Density of the squared singular values of J for ``depth`` equal layers.

    S_{JJᵀ} = S_{WWᵀ}^L S_{D²}^L (arXiv 1711.04735 eq. 11) at the fixed point q*
    (``q=None``) or at a given pre-activation variance q; see
    :func:`jacobian_density_layers` for the method and the parameters. The linear Gaussian
    network gives the Fuss–Catalan law scaled by σ_w^{2L}; the linear orthogonal one the
    point mass at σ_w^{2L} (``atoms``).
    """
    depth = check_depth(depth)
    qq = fixed_point_q(activation, sigma_w, sigma_b, q)
    return jacobian_density_layers(
        activation,
        np.full(depth, float(sigma_w)),
        np.full(depth, qq),
        weights,
        x=x,
        n_points=n_points,
        rel_eps=rel_eps,
        n_nodes=n_nodes,
    )
