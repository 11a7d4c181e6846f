"""Newton solution of the S-transform equations of JJᵀ for a product of layers with
discrete derivative laws (arXiv 1711.04735 eq. 8–11; arXiv 1802.09979 §2.2): the solver
behind :func:`sigprop.theory.spectra.jacobian_density_layers`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["m_transform", "solve_free_product", "stack_laws"]


def stack_laws(laws: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """The discrete laws (λ_i, p_i) as rows λ (J, K) and p·λ (J, K), zero-padded to one K.

    A padded entry has λ = 0 and p·λ = 0, so it adds exactly 0 to M and M′ (w ≠ 0 always:
    w = e^η / z).
    """
    width = max(lam.size for lam, _ in laws)
    lam_rows = np.zeros((len(laws), width))
    plam_rows = np.zeros((len(laws), width))
    for j, (lam, p) in enumerate(laws):
        lam_rows[j, : lam.size] = lam
        plam_rows[j, : lam.size] = p * lam
    return lam_rows, plam_rows


def m_transform(w: np.ndarray, lam: np.ndarray, plam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """M_j(w) = Σ_i p_ji λ_ji/(w − λ_ji) and M_j′(w) at points w (J, n) of the J laws
    stacked by :func:`stack_laws`, all laws in one array operation.

    With w = a + ib and d = a − λ (λ real), 1/(w − λ) = (d − ib)t with t = 1/(d² + b²), so
    with u = dt: M = Σ pλ u − ib Σ pλ t and M′ = −Σ pλ (u − ibt)²
    = b² Σ pλ t² − Σ pλ u² + 2ib Σ pλ ut, in real arithmetic (no complex division) with
    the sums over i as matrix–vector products. Where d² + b² would leave the normal range
    (w within 1e-150 of an atom) the complex quotient is used instead.
    """
    b = w.imag[:, :, None]
    d = w.real[:, :, None] - lam[:, None, :]
    den = d * d + b * b
    if not np.all(den > 1e-300):
        inv = 1.0 / (w[:, :, None] - lam[:, None, :])
        r = inv * plam[:, None, :]
        return r.sum(axis=2), -(r * inv).sum(axis=2)
    t = np.reciprocal(den, out=den)
    u = d * t
    col = plam[:, :, None]

    def dot(x: np.ndarray) -> np.ndarray:
        return np.matmul(x, col)[:, :, 0]

    b = b[:, :, 0]
    m = dot(u) - 1j * (b * dot(t))
    dm = (b * b * dot(t * t) - dot(u * u)) + 2j * (b * dot(u * t))
    return m, dm


def solve_free_product(
    xc: np.ndarray,
    laws: tuple[np.ndarray, np.ndarray],
    mult: np.ndarray,
    log_sig2_sum: float,
    n_gauss: int,
    mu: np.ndarray,
    m1: float,
    m2: float,
    y_start: float,
    steps_per_decade: int = 4,
    n_newton: int = 12,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve the S-transform equations of JJᵀ at the complex points ``xc`` (Im > 0).

    Unknowns: z = M_J(x) and, for each distinct layer law j (multiplicity n_j),
    w_j = M_j⁻¹(z). With S_{D_j²}(z) = (1 + z)/(z w_j) and S_{WWᵀ} = 1/(σ²(1+z)) (Gaussian)
    or 1/σ² (orthogonal), x = M_J⁻¹(z) = (1+z)/(z S_J(z)) becomes (arXiv 1802.09979 §2.2)

        E₀ = log x − Σ log σ_l² + (1 − L) log z + (L − 1 − n_gauss) log(1 + z)
             − Σ_j n_j log w_j = 0 (mod 2πi),
        E_j = M_j(w_j) − z = 0.

    Newton runs in z and η_j = log(z w_j) (w_j ≈ μ₁,j/z for small z, so η_j stays O(1) and
    E₀ = log x − Σ log σ_l² + log z + (L − 1 − n_gauss) log(1 + z) − Σ_j n_j η_j has no
    large cancelling log z terms), with every step capped (|Δz| ≤ ½ min(|z|, |1+z|),
    |Δη_j| ≤ ½) so that it never jumps across the singular points z = 0 and z = −1: near
    them a capped step is a step in log z or log(1 + z), in which the deep-network
    equations are close to linear (for linear layers x = (1+z)^{L+1}/z).
    Each x is continued along the vertical path x + iy, y from ``y_start`` (where the
    large-|x| expansions z ≈ m1/x + m2/x², w_j ≈ μ₁,j/z + μ₂,j/μ₁,j hold) geometrically
    down to Im xc. The arrow-shaped Newton system is solved through its Schur complement.
    ``laws`` are the distinct layer laws stacked by :func:`stack_laws`.
    Returns z, 1 + z and the final residual max(|E₀|, max_j |E_j|/|z|).
    """
    # (a difference of logs: y_start / Im x overflows for the deepest grids, Im x ~ 1e-307)
    decades = np.maximum(np.log10(y_start) - np.log10(xc.imag), 1.0)
    groups = np.ceil(decades / 4.0)
    if np.unique(groups).size > 1:
        # Paths of very different lengths: solve them in groups of similar length, so that
        # the short ones do not take the step count of the longest.
        z = np.empty(xc.shape, dtype=np.complex128)
        zp1 = np.empty(xc.shape, dtype=np.complex128)
        resid = np.empty(xc.shape)
        for g in np.unique(groups):
            sel = groups == g
            z[sel], zp1[sel], resid[sel] = solve_free_product(
                xc[sel],
                laws,
                mult,
                log_sig2_sum,
                n_gauss,
                mu,
                m1,
                m2,
                y_start,
                steps_per_decade,
                n_newton,
            )
        return z, zp1, resid
    L = float(np.sum(mult))
    lam_rows, plam_rows = laws
    xr = xc.real
    n_steps = int(steps_per_decade * float(np.max(decades))) + 2
    frac = np.linspace(0.0, 1.0, n_steps)[:, None]
    ys = np.exp((1.0 - frac) * np.log(y_start) + frac * np.log(xc.imag)[None, :])
    x0 = xr + 1j * ys[0]
    z = m1 / x0 + m2 / x0**2
    # 1 + z is carried separately: both receive the same Newton increments, so each keeps
    # its own relative precision (z → 0 for large x, 1 + z → 0 near x = 0).
    zp1 = 1.0 + z
    eta = np.log(mu[:, 0][:, None] + (mu[:, 1] / mu[:, 0])[:, None] * z[None, :])

    def equations(logx, z, zp1, eta):
        e0 = (
            logx
            - log_sig2_sum
            + np.log(z)
            + (L - 1.0 - n_gauss) * np.log(zp1)
            - np.sum(mult[:, None] * eta, axis=0)
        )
        e0 = e0.real + 1j * np.angle(np.exp(1j * e0.imag))  # modulo 2πi
        w = np.exp(eta) / z
        mj, dmj = m_transform(w, lam_rows, plam_rows)
        return e0, mj - z[None, :], dmj * w  # E_j and M_j′(w) w = dE_j/dη_j

    def capped(step, limit):
        size = np.abs(step)
        return np.where(size > limit, step * (limit / np.maximum(size, 1e-300)), step)

    before = None  # the solution one path step back
    for k in range(n_steps):
        logx = np.log(xr + 1j * ys[k])
        solved = (z.copy(), eta.copy()) if k > 0 else None
        if before is not None:
            # Secant predictor (the path's steps are equal in log y): the change over the
            # last step again, capped as the Newton steps are.
            dz = capped(z - before[0], 0.5 * np.minimum(np.abs(z), np.abs(zp1)))
            z, zp1, eta = z + dz, zp1 + dz, eta + capped(eta - before[1], 0.5)
        before = solved
        act = np.arange(xr.size)
        # Intermediate points of the path only need to lie in Newton's basin of the next
        # one (a relative error of ~1e-6 after a step below 1e-3, against a change of ~10%
        # per step); the last, the point asked for, is solved to full precision.
        tol = 1e-7 if k == n_steps - 1 else 1e-3
        for _ in range(n_newton):
            za, zpa, ea = z[act], zp1[act], eta[:, act]
            e0, ej, d = equations(logx[act], za, zpa, ea)
            a = 1.0 / za + (L - 1.0 - n_gauss) / zpa
            c = -d / za[None, :] - 1.0  # dE_j/dz
            b = -mult[:, None]  # dE₀/dη_j
            dz = -(e0 - np.sum(b * ej / d, axis=0)) / (a - np.sum(b * c / d, axis=0))
            dz = capped(dz, 0.5 * np.minimum(np.abs(za), np.abs(zpa)))
            deta = capped(-(ej + c * dz[None, :]) / d, 0.5)
            z[act] = za + dz
            zp1[act] = zpa + dz
            eta[:, act] = ea + deta
            # Quadratic convergence: after a step below tol the error is below ~tol².
            done = (np.abs(dz) <= tol * np.abs(za)) & np.all(np.abs(deta) <= tol, axis=0)
            act = act[~done]
            if act.size == 0:
                break
    e0, ej, _ = equations(np.log(xc), z, zp1, eta)
    resid = np.maximum(np.abs(e0), np.max(np.abs(ej), axis=0) / np.abs(z))
    return z, zp1, resid
