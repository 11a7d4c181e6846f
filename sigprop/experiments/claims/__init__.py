"""Claims as data: each section of ``sigprop demo`` as a pure function returning its claims.

A :class:`Claim` is one prediction of a paper (arXiv id and equation) held against one
measurement, with the tolerance, how it follows from the finite-size noise, and the verdict
(``"agree"``/``"disagree"``, checked against the numbers on construction). A section function
takes explicit inputs — the read-only :class:`Bench` (settings, data, seed), the
:class:`PhasePoints` (the EOC σ_w and the phases' σ_w, from :func:`phase_points`) and the
output folder for its figure — and returns a :class:`Section` (its claims, every number, its
prose, its figures). No section reads anything another one wrote, so they can run alone and
in any order, and a wrong input (a wrong EOC σ_w) shows as a ``"disagree"``.

``core``      :class:`Claim`, :class:`Section`, :func:`finite_size_tolerance`,
              :func:`log_ratio_err`, :func:`section_verdict`
``config``    :class:`DemoConfig` (sizes), :func:`check_config`
``bench``     :class:`Bench`, :class:`PhasePoints`, :func:`phase_points`, :func:`build`,
              :func:`variants`, :func:`derive_seed`
``eoc``, ``signal``, ``collapse``, ``spectra``, ``training``   the five sections
``render``    the report (Markdown) and ``results.json`` from sections

Figures come from :mod:`sigprop.plotting.claims`; :mod:`sigprop.experiments.demo` runs the
sections in order with a progress bar and writes the files.
"""

from __future__ import annotations

from sigprop.experiments.claims.bench import (
    Bench,
    PhasePoints,
    build,
    derive_seed,
    phase_points,
    variants,
)
from sigprop.experiments.claims.collapse import SYNFLOW_OFFICIAL, collapse_section
from sigprop.experiments.claims.config import DemoConfig, check_config
from sigprop.experiments.claims.core import (
    AGREE,
    DISAGREE,
    Claim,
    Section,
    finite_size_tolerance,
    log_ratio_err,
    section_verdict,
)
from sigprop.experiments.claims.eoc import HAYOU_TANH, eoc_section
from sigprop.experiments.claims.render import (
    claims_markdown,
    report_markdown,
    results_document,
    write_report,
)
from sigprop.experiments.claims.signal import signal_section, signal_tolerances
from sigprop.experiments.claims.spectra import hidden_chain, spectra_section
from sigprop.experiments.claims.training import training_section

__all__ = [
    "AGREE",
    "DISAGREE",
    "HAYOU_TANH",
    "SYNFLOW_OFFICIAL",
    "Bench",
    "Claim",
    "DemoConfig",
    "PhasePoints",
    "Section",
    "build",
    "check_config",
    "claims_markdown",
    "collapse_section",
    "derive_seed",
    "eoc_section",
    "finite_size_tolerance",
    "hidden_chain",
    "log_ratio_err",
    "phase_points",
    "report_markdown",
    "results_document",
    "section_verdict",
    "signal_section",
    "signal_tolerances",
    "spectra_section",
    "training_section",
    "variants",
    "write_report",
]
