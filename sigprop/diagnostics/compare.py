"""``compare(prediction, measurement)``: how well the theory describes this network.

Per layer: relative errors |measured − predicted| / |predicted| of q^l, χ^l, the backward
norm ratio and c^l (plus the absolute error of c^l, which is the meaningful one near c = 0);
their maximum and median. For the Jacobian, the relative errors of the moments of the
squared singular values and, when the prediction carries the law, the Wasserstein-1
distance W₁ = ∫|F_emp(x) − F_pred(x)| dx (the 1-D formula; Villani 2009, *Optimal
Transport*, Remark 2.19) and the Kolmogorov–Smirnov distance sup|F_emp − F_pred| between
the pooled empirical squared singular values and the predicted law.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sigprop._json import to_jsonable
from sigprop.diagnostics.measure import Measurement
from sigprop.diagnostics.predict import Prediction
from sigprop.validate import InvalidInput

__all__ = ["Agreement", "compare", "node_errors", "resolution_floor", "spectral_distances"]


def _rel(measured, predicted) -> np.ndarray:
    measured = np.asarray(measured, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.abs(measured - predicted) / np.abs(predicted)
    return np.where((predicted == 0) & (measured == 0), 0.0, out)


@dataclass(frozen=True)
class Agreement:
    """Prediction against measurement (per-layer arrays in forward order).

    Fields
    ------
    names: weight-layer names.
    q_rel_err, chi_rel_err, grad_ratio_rel_err: (L,) relative errors.
    c_rel_err, c_abs_err: (L,) for the input-pair correlation; ``None`` if either side lacks c.
    summary: ``{quantity: {"max": ..., "median": ...}}`` over layers.
    moment_rel_err: (2,) relative errors of the Jacobian moments m₁, m₂ (measured: mean over
        inputs), ``None`` if either side lacks them.
    wasserstein1, ks: distances between the empirical squared singular values (exact
        spectrum, all inputs pooled) and the predicted law, ``None`` without a predicted
        law or an exact measured spectrum.
    nodes: module name → per-module errors for the modules both sides report
        (:func:`node_errors`); empty when either side has no ``nodes``.
    """

    names: tuple[str, ...]
    q_rel_err: np.ndarray
    chi_rel_err: np.ndarray
    grad_ratio_rel_err: np.ndarray
    c_rel_err: np.ndarray | None
    c_abs_err: np.ndarray | None
    summary: dict = field(default_factory=dict)
    moment_rel_err: np.ndarray | None = None
    wasserstein1: float | None = None
    ks: float | None = None
    nodes: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready fields (``sigprop._json``: infinite or NaN errors become ``None``)."""
        return to_jsonable(self, "Agreement")


def resolution_floor(samples, zero_tol: float | None = None, *, dtype=None) -> float:
    """The value below which squared singular values from a floating-point SVD are round-off.

    The singular values of a computed Jacobian carry absolute errors of order ε·σ_max (ε
    the unit round-off of the precision the Jacobian was computed in; Golub & Van Loan,
    *Matrix Computations*, 4th ed., §8.6.1), so squared values below (N·ε)²·max, N the
    matrix dimension (numpy's ``matrix_rank`` tolerance, squared), cannot be told from 0:
    an exactly singular direction (ReLU's atom at 0) and a genuinely tiny one of a deep
    network both land there.

    ``samples``: squared singular values, shape (n_inputs, N) (``JacobianSpectrum.squared``)
    or a flat array (then N is its length: conservative when inputs are pooled). ``dtype``:
    the precision of the computation (``JacobianSpectrum.dtype``, e.g. ``"float32"``;
    default the dtype of ``samples`` -- a float32 Jacobian stored as float64 needs it).
    ``zero_tol`` overrides (N·ε)².
    """
    values = np.asarray(samples)
    if dtype is not None:
        eps = float(np.finfo(np.dtype(str(dtype).replace("torch.", ""))).eps)
    elif values.dtype.kind == "f":
        eps = float(np.finfo(values.dtype).eps)
    else:
        eps = float(np.finfo(np.float64).eps)
    n = values.shape[-1] if values.ndim >= 2 else values.size
    values = np.abs(values.astype(np.float64, copy=False))
    if values.size == 0:
        return 0.0
    tol = (n * eps) ** 2 if zero_tol is None else float(zero_tol)
    return tol * float(values.max())


def spectral_distances(
    samples,
    cdf,
    *,
    upper: float | None = None,
    n_grid: int = 4096,
    zero_tol: float | None = None,
    dtype=None,
):
    """(W₁, KS) between the empirical law of ``samples`` and a law given by its CDF.

    ``cdf`` is a vectorised callable t ↦ P(λ ≤ t) (e.g. ``JacobianDensity.cdf`` or
    ``functools.partial(fuss_catalan_cdf, L)``). Non-negative samples (squared singular
    values, ``(n_inputs, N)`` or flat; ``dtype`` the precision they were computed in) are
    compared above their :func:`resolution_floor` t₀ only, where the empirical
    CDF is exact: F_emp(t₀) counts every sample at round-off level, whatever its computed
    value, against F(t₀), which includes any atom at 0; below t₀ a deep network's tiny
    singular values and round-off are indistinguishable (W₁ omits at most t₀ there).
    W₁ = ∫|F_emp − F| dt is integrated by the trapezoid rule on the union of the samples
    and ``n_grid`` points spanning [t₀, max(samples, upper)], on which F_emp is piecewise
    constant; KS = sup|F_emp − F| is evaluated on both sides of every jump of F_emp.
    """
    raw = np.asarray(samples)
    samples = np.sort(np.asarray(samples, dtype=np.float64).ravel())
    if samples.size == 0 or not np.all(np.isfinite(samples)):
        raise InvalidInput("samples must be a non-empty array of finite values")
    if not callable(cdf):
        raise InvalidInput("cdf must be a callable t -> P(X <= t)")
    hi = max(float(samples[-1]), float(upper) if upper is not None else 0.0)
    signed = samples[0] < 0  # not squared singular values: no floor, every sample counts
    lo = float(samples[0]) if signed else resolution_floor(raw, zero_tol, dtype=dtype)
    hi = max(hi, lo)
    xs = np.union1d(np.linspace(lo, hi, n_grid), samples[samples > lo])
    f_pred = np.asarray(cdf(xs), dtype=np.float64)
    if f_pred.shape != xs.shape or not np.all(np.isfinite(f_pred)):
        raise InvalidInput("cdf must return finite values of the same shape as its input")
    f_emp = np.searchsorted(samples, xs, side="right") / samples.size
    diff = np.abs(f_emp - f_pred)
    w1 = float(np.sum(0.5 * (diff[1:] + diff[:-1]) * np.diff(xs)))
    # at a sample s > t₀ compare F_emp(s⁻) with F(s⁻) and F_emp(s) with F(s) (F may have
    # atoms); the grid's first point t₀ covers the samples at or below it
    resolved = samples if signed else samples[samples > lo]
    ks = float(diff.max())
    if resolved.size:
        f_at = np.asarray(cdf(resolved), dtype=np.float64)
        f_before = np.asarray(cdf(np.nextafter(resolved, -np.inf)), dtype=np.float64)
        below = np.searchsorted(samples, resolved, side="left") / samples.size
        above = np.searchsorted(samples, resolved, side="right") / samples.size
        ks = max(ks, float(np.abs(below - f_before).max()), float(np.abs(above - f_at).max()))
    return w1, ks


def _summary(values: np.ndarray | None) -> dict | None:
    if values is None:
        return None
    finite = np.asarray(values)[np.isfinite(values)]
    if finite.size == 0:
        return {"max": None, "median": None}
    return {"max": float(finite.max()), "median": float(np.median(finite))}


def _rel1(measured, predicted) -> float | None:
    if measured is None or predicted is None:
        return None
    return float(_rel(measured, predicted))


def node_errors(predicted: dict, measured: dict) -> dict:
    """Per-module errors between ``Prediction.nodes`` and ``Measurement.nodes``.

    For every module in both: relative errors ``q_rel_err``, ``avg_sq_ch_mean_rel_err``,
    ``avg_ch_var_rel_err``; absolute errors ``mean_abs_err`` and ``correlation_abs_err``
    (meaningful near 0); for weight layers ``weight_grad_rel_err`` and
    ``weight_grad_ratio_decades`` = |log10(measured ratio / predicted ratio)|.
    """
    out = {}
    for name, p in predicted.items():
        m = measured.get(name)
        if m is None:
            continue
        rec = {
            "q_rel_err": _rel1(m.get("q"), p.get("q")),
            "avg_sq_ch_mean_rel_err": _rel1(m.get("avg_sq_ch_mean"), p.get("avg_sq_ch_mean")),
            "avg_ch_var_rel_err": _rel1(m.get("avg_ch_var"), p.get("avg_ch_var")),
            "mean_abs_err": abs(m["mean"] - p["mean"]),
            "correlation_abs_err": None
            if m.get("correlation") is None or p.get("correlation") is None
            else abs(m["correlation"] - p["correlation"]),
        }
        if p.get("weight_grad") is not None and m.get("weight_grad") is not None:
            rec["weight_grad_rel_err"] = _rel1(m["weight_grad"], p["weight_grad"])
            pr, mr = p.get("weight_grad_ratio"), m.get("weight_grad_ratio")
            with np.errstate(divide="ignore", invalid="ignore"):
                rec["weight_grad_ratio_decades"] = (
                    None if pr is None or mr is None else float(abs(np.log10(mr / pr)))
                )
        out[name] = rec
    return out


def compare(prediction: Prediction, measurement: Measurement, spectrum=None) -> Agreement:
    """Agreement metrics between ``predict(...)`` and ``measure(...)`` for the same model.

    ``spectrum`` (a ``JacobianSpectrum``) defaults to ``measurement.spectrum``.

    Raises ``ValueError`` if the two describe different layers.
    """
    if not isinstance(prediction, Prediction) or not isinstance(measurement, Measurement):
        raise InvalidInput("compare expects (Prediction, Measurement)")
    if tuple(prediction.names) != tuple(measurement.names):
        raise InvalidInput(
            f"prediction and measurement are for different layers: {prediction.names} vs "
            f"{measurement.names}"
        )
    q_err = _rel(measurement.q, prediction.q)
    chi_err = _rel(measurement.chi, prediction.chi)
    g_err = _rel(measurement.grad_ratio, prediction.grad_ratio)
    c_rel = c_abs = None
    if prediction.c is not None and measurement.c is not None:
        c_rel = _rel(measurement.c, prediction.c)
        c_abs = np.abs(np.asarray(measurement.c) - np.asarray(prediction.c))
    spectrum = measurement.spectrum if spectrum is None else spectrum
    moment_err = w1 = ks = None
    if spectrum is not None and prediction.jacobian_moments is not None:
        measured = np.asarray(spectrum.moments).mean(axis=0)
        k = min(measured.size, np.asarray(prediction.jacobian_moments).size)
        moment_err = _rel(measured[:k], np.asarray(prediction.jacobian_moments)[:k])
    law = prediction.jacobian_density
    if spectrum is not None and law is not None and spectrum.method != "lanczos":
        w1, ks = spectral_distances(
            spectrum.squared, law.cdf, upper=float(law.edge), dtype=spectrum.dtype
        )
    nodes = node_errors(prediction.nodes, measurement.nodes)

    def column(key):
        vals = [r[key] for r in nodes.values() if r.get(key) is not None]
        return np.array(vals, dtype=np.float64) if vals else None

    summary = {
        "node_q_rel_err": _summary(column("q_rel_err")),
        "node_weight_grad_ratio_decades": _summary(column("weight_grad_ratio_decades")),
        "q_rel_err": _summary(q_err),
        "chi_rel_err": _summary(chi_err),
        "grad_ratio_rel_err": _summary(g_err),
        "c_abs_err": _summary(c_abs),
        "moment_rel_err": _summary(moment_err),
    }
    return Agreement(
        names=tuple(prediction.names),
        q_rel_err=q_err,
        chi_rel_err=chi_err,
        grad_ratio_rel_err=g_err,
        c_rel_err=c_rel,
        c_abs_err=c_abs,
        summary={k: v for k, v in summary.items() if v is not None},
        moment_rel_err=moment_err,
        wasserstein1=w1,
        ks=ks,
        nodes=nodes,
    )
