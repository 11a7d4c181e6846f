"""A claim as data: one prediction of a paper, one measurement, one tolerance, one verdict.

Also the two rules every section judges with: the finite-size tolerance
(:func:`finite_size_tolerance`) and the error in decades of quantities that span many orders
of magnitude (:func:`log_ratio_err`). A section's outcome is a :class:`Section`: its claims,
every number behind them (``results.json``), the prose and tables of the report, its figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sigprop import validate
from sigprop._json import to_jsonable
from sigprop.validate import InvalidInput

__all__ = [
    "AGREE",
    "DISAGREE",
    "Claim",
    "Section",
    "finite_size_tolerance",
    "log_ratio_err",
    "section_verdict",
]

AGREE = "agree"
DISAGREE = "disagree"
_ARXIV_ID = re.compile(r"^\d{4}\.\d{4,5}$")


@dataclass(frozen=True)
class Claim:
    """One theoretical prediction held against one measurement.

    Fields
    ------
    id: stable identifier ``"section/what[/case]"``, e.g. ``"signal/eoc/pruned/q"``.
    statement: what the theory claims, in words.
    paper: the arXiv id of the paper that makes the prediction (``"1606.05340"``).
    equation: where in that paper (``"eq. (3)–(5)"``, ``"§4"``, ``"Thm. 3"``).
    prediction: the predicted value, or the predicted outcome in words where it is a profile
        or an event (the numbers are in the section's ``numbers``).
    measurement: the measured value, or the measured outcome in words.
    error: the discrepancy of the measurement from the prediction, in the units of ``metric``
        (NaN when the two cannot be compared).
    tolerance: the largest ``error`` that counts as agreement.
    metric: what ``error`` and ``tolerance`` measure (``"relative error"``, ``"decades"``,
        ``"densities on the wrong side"``, ...).
    derivation: how the tolerance follows from the finite-size noise of the measurement, in
        words.
    verdict: ``"agree"`` when ``error <= tolerance``, else ``"disagree"`` (a NaN error
        disagrees). Checked on construction, so a claim cannot carry a verdict its numbers
        do not support; :meth:`judge` computes it.
    figure: file name of the figure that shows the comparison, or ``None``.
    """

    id: str
    statement: str
    paper: str
    equation: str
    prediction: float | str
    measurement: float | str
    error: float
    tolerance: float
    metric: str
    derivation: str
    verdict: str
    figure: str | None = None

    def __post_init__(self) -> None:
        for name in ("id", "statement", "equation", "metric", "derivation"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidInput(f"claim {name} must be a non-empty string, got {value!r}")
        if not isinstance(self.paper, str) or not _ARXIV_ID.match(self.paper):
            raise InvalidInput(
                f"claim {self.id}: paper must be an arXiv id NNNN.NNNNN, got {self.paper!r}"
            )
        object.__setattr__(self, "error", validate.real_number(self.error, "claim error"))
        tol = validate.real_number(self.tolerance, "claim tolerance")
        if not tol >= 0.0:  # also refuses NaN
            raise InvalidInput(f"claim {self.id}: tolerance must be >= 0, got {tol!r}")
        object.__setattr__(self, "tolerance", tol)
        expected = _verdict(self.error, tol)
        if self.verdict != expected:
            raise InvalidInput(
                f"claim {self.id}: verdict {self.verdict!r} contradicts error {self.error:g} "
                f"against tolerance {tol:g} ({expected!r})"
            )

    @classmethod
    def judge(cls, *, error: float, tolerance: float, **fields) -> Claim:
        """A claim whose verdict is computed from ``error`` and ``tolerance``."""
        error = validate.real_number(error, "claim error")
        tolerance = validate.real_number(tolerance, "claim tolerance")
        return cls(error=error, tolerance=tolerance, verdict=_verdict(error, tolerance), **fields)

    @property
    def agrees(self) -> bool:
        return self.verdict == AGREE

    @property
    def source(self) -> str:
        """``"arXiv <paper>, <equation>"``."""
        return f"arXiv {self.paper}, {self.equation}"

    def to_dict(self) -> dict:
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: dict) -> Claim:
        """The claim of :meth:`to_dict` (a NaN error comes back from JSON's ``null``)."""
        data = dict(data)
        if data.get("error") is None:
            data["error"] = math.nan
        return cls(**data)


def _verdict(error: float, tolerance: float) -> str:
    return AGREE if error <= tolerance else DISAGREE  # NaN compares False: disagree


def finite_size_tolerance(
    width: int,
    *,
    density: float = 1.0,
    n_sigma: float = 1.0,
    scale: float = 1.0,
    compounded: int = 1,
    averaged: float = 1.0,
    decades: bool = False,
) -> float:
    """The tolerance of a measurement on one finite network, in units of its noise.

    A layer's pre-activation variance q^l is a mean over the layer's units of squared
    pre-activations, each a sum of K = ρN weighted inputs (N the width, ρ the density: the
    kept connections per unit). For nearly Gaussian pre-activations the relative
    fluctuation of such a quantity in one network is s = √(2/K) (the relative standard
    deviation of a mean of K squared standard normals; Poole et al., arXiv 1606.05340, §2,
    take K → ∞). From s:

    * ``scale``: the quantity's noise in units of s (a correlation's absolute error is
      (1 − c²)/√K ≤ s/√2, so ``scale=1/√2``);
    * ``compounded``: a product of ``compounded`` independent per-layer factors (gradient
      ratios, Π χ^l) has relative noise s·√compounded;
    * ``averaged``: a mean over ``averaged`` independent terms has noise s/√averaged;
    * ``decades``: the noise of log10 of the quantity, s/ln 10 (for ratios that span many
      orders of magnitude);
    * ``n_sigma``: how many standard errors are accepted.

    Returns ``n_sigma · scale · s · √compounded / √averaged`` (``/ ln 10`` with ``decades``).
    """
    width = validate.positive_int(width, "width")
    density = validate.density(density)
    n_sigma = validate.positive_float(n_sigma, "n_sigma")
    scale = validate.positive_float(scale, "scale")
    compounded = validate.positive_int(compounded, "compounded")
    averaged = validate.positive_float(averaged, "averaged")
    s = math.sqrt(2.0 / (density * width))
    tol = n_sigma * scale * s * math.sqrt(compounded) / math.sqrt(averaged)
    return tol / math.log(10.0) if decades else tol


def log_ratio_err(measured, predicted, *, reduce: str = "max") -> float:
    """|log10(measured_l / predicted_l)| over the comparable entries (both positive and
    finite), reduced by ``"max"`` or ``"median"``: the error in decades of a quantity that
    spans many orders of magnitude (gradient ratios, Jacobian moments). NaN when no entry is
    comparable."""
    import numpy as np

    reducers = {"max": np.max, "median": np.median}
    if reduce not in reducers:
        raise InvalidInput(f"reduce must be one of {sorted(reducers)}, got {reduce!r}")
    m = np.atleast_1d(np.asarray(measured, dtype=float))
    p = np.atleast_1d(np.asarray(predicted, dtype=float))
    if m.shape != p.shape:
        raise InvalidInput(f"measured {m.shape} and predicted {p.shape} differ in shape")
    ok = (m > 0) & (p > 0) & np.isfinite(m) & np.isfinite(p)
    if not ok.any():
        return float("nan")
    return float(reducers[reduce](np.abs(np.log10(m[ok] / p[ok]))))


@dataclass(frozen=True)
class Section:
    """One section of the demo.

    Fields
    ------
    key: short name (``"eoc"``, ``"signal"``, ...), the key in ``results.json``.
    title: the report heading.
    claims: the section's claims, in report order.
    numbers: every number behind them (``results.json`` ``sections[key]``), JSON-ready.
    markdown: the section's prose and data tables (prediction and measurement); the claims
        table is written by the renderer.
    figures: paths of the figures, in report order.
    """

    key: str
    title: str
    claims: tuple[Claim, ...]
    numbers: dict
    markdown: str
    figures: tuple[Path, ...] = ()

    @property
    def verdict(self) -> str:
        return section_verdict(self.claims)

    @property
    def agrees(self) -> bool:
        return all(c.agrees for c in self.claims)


def section_verdict(claims: Sequence[Claim]) -> str:
    """One line: ``"agree (n/n claims)"`` or ``"disagree (k/n claims agree; disagree: ids)"``."""
    if not claims:
        raise InvalidInput("a section needs at least one claim")
    bad = [c.id for c in claims if not c.agrees]
    n = len(claims)
    if not bad:
        return f"{AGREE} ({n}/{n} claims)"
    return f"{DISAGREE} ({n - len(bad)}/{n} claims agree; disagree: {', '.join(bad)})"
