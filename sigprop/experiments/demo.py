"""``sigprop demo``: the main job — theory against experiment on the embedded default network.

The default network is a deep tanh MLP (20 hidden layers) on MNIST-1D (Greydanus 2020,
arXiv 2011.14439; generated locally), initialised at the edge of chaos (EOC) and pruned to a
low density. Five sections, each a pure function of :mod:`sigprop.experiments.claims`
returning its claims (prediction, measurement, tolerance with its derivation, verdict):

a. **EOC point** (Poole et al. 2016, arXiv 1606.05340, eq. (3)–(5); Schoenholz et al. 2017,
   arXiv 1611.01232, §3): σ_w at which χ₁ = 1 for the chosen σ_b, q*, and the depth scales
   of the ordered and chaotic comparison points; checked against the wide network's
   measured fixed point and against the constant of Hayou et al.'s code (tanh σ_b = 0.2,
   σ_w = 1.2981; arXiv 2002.08797).
b. **Signal and gradient flow** per layer for the dense network, the randomly pruned one
   (no rescaling: σ_w² → ρσ_w², Hayou et al. §3) and the rescaled one (the rescaling trick,
   Hayou et al. §4), in the ordered, EOC and chaotic phases: q^l and c^l from the mean-field
   maps against hook measurements, and per-layer gradient norms against the χ-product
   prediction (Schoenholz et al. §4).
c. **Layer collapse** across pruning methods (random, magnitude, SNIP, GraSP, SynFlow) at
   several densities: collapsed layers, and sparsity against effective sparsity
   (Vysogorets & Kempe, arXiv 2107.02306), with the theory's prediction of where global
   magnitude pruning first empties a layer (Hayou et al. §3).
d. **Jacobian spectra** of the hidden chain: empirical squared singular values against the
   free-probability moments and density (Pennington et al. 2017, arXiv 1711.04735, §3 and
   eq. (15)–(16)) for dense, pruned and rescaled networks.
e. **Training**: dense vs pruned vs pruned+rescaled vs DCT-plus-sparse (Price & Tanner 2021,
   arXiv 2102.07655) at the same density, with the theory's gradient attenuation as the
   prediction of which ones train.

This module is the orchestration: the configuration (:data:`FULL`, :data:`QUICK`), the
progress bar, the order of the sections, and the files. Outputs in ``out``: ``report.md``,
``results.json`` (every number of the report and every claim; both written atomically) and
``demo_*.png`` figures. ``quick=True`` shrinks widths, probe batches, densities and epochs so
the whole job runs in under two minutes on two CPU cores. Every random choice comes from
``seed`` through explicit generators, so the same seed gives the same numbers on the CPU.
"""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

from sigprop import validate
from sigprop._json import to_jsonable
from sigprop.experiments.claims import (
    SYNFLOW_OFFICIAL,
    Bench,
    Claim,
    DemoConfig,
    check_config,
    collapse_section,
    derive_seed,
    eoc_section,
    phase_points,
    report_markdown,
    results_document,
    signal_section,
    spectra_section,
    training_section,
    write_report,
)
from sigprop.validate import InvalidInput

__all__ = ["FULL", "QUICK", "SYNFLOW_OFFICIAL", "DemoConfig", "DemoResult", "run_demo"]

#: The seed derivation of every random choice (imported under this name by callers of the
#: demo; :func:`sigprop.experiments.claims.derive_seed`).
_derive_seed = derive_seed

#: The full run (under 15 minutes on two CPU cores).
FULL = DemoConfig()
#: ``--quick`` (under 2 minutes on two CPU cores).
QUICK = DemoConfig(
    width=128,
    n_probe=256,
    n_pairs=128,
    collapse_densities=(0.1, 0.01, 0.001),
    n_jacobian=4,
    epochs=3,
)

#: The sections in report order: key and the function of (bench, phase points, out folder).
SECTIONS = (
    ("eoc", lambda bench, points, out: eoc_section(bench, points)),
    ("signal", signal_section),
    ("collapse", collapse_section),
    ("spectra", spectra_section),
    ("training", training_section),
)


@dataclass(frozen=True)
class DemoResult:
    """Outcome of :func:`run_demo`.

    Fields
    ------
    out: the output folder.
    report: path of ``report.md``; results: path of ``results.json``.
    figures: paths of the PNG figures, in report order.
    verdicts: one line per section (``"eoc"``, ``"signal"``, ``"collapse"``, ``"spectra"``,
        ``"training"``): how many of its claims agree, and which disagree.
    sections: every number of the report, by section (what ``results.json`` holds).
    config: the :class:`DemoConfig` used, as a dict.
    quick, seed, device: the arguments of the run.
    seconds: wall-clock time of the run; section_seconds: per section.
    claims: every :class:`~sigprop.experiments.claims.Claim`, in report order.
    """

    out: str
    report: str
    results: str
    figures: tuple[str, ...]
    verdicts: dict[str, str]
    sections: dict
    config: dict
    quick: bool
    seed: int
    device: str
    seconds: float
    section_seconds: dict[str, float] = field(default_factory=dict)
    claims: tuple[Claim, ...] = ()

    def to_dict(self) -> dict:
        return to_jsonable(self, "DemoResult")


def run_demo(
    out: str | Path = "sigprop-demo",
    quick: bool = False,
    device: str = "cpu",
    seed: int = 0,
    *,
    progress: bool = True,
    config: DemoConfig | None = None,
) -> DemoResult:
    """Run the main job and write ``report.md``, ``results.json`` and figures into ``out``.

    Parameters
    ----------
    out: output folder (created; existing demo files in it are overwritten).
    quick: use :data:`QUICK` instead of :data:`FULL` (ignored when ``config`` is given).
    device: torch device of the training comparison (``"cpu"`` or ``"cuda"``); the
        diagnostics run on the CPU in float64.
    seed: seed of every random choice (weights, masks, batches, data split).
    progress: show tqdm progress bars.
    config: explicit sizes (e.g. for tests); overrides ``quick``.

    Returns
    -------
    DemoResult
    """
    import torch
    from tqdm.auto import tqdm

    seed = validate.nonneg_int(seed, "seed")
    device = str(device)
    if device.split(":")[0] not in ("cpu", "cuda"):
        raise InvalidInput(f"device must be 'cpu' or 'cuda', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidInput("device 'cuda' requested but torch.cuda.is_available() is False")
    cfg = check_config(config if config is not None else (QUICK if quick else FULL))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    bench = Bench.load(cfg, seed, device=device, progress=progress)
    points = phase_points(cfg)
    sections = []
    timings: dict[str, float] = {}
    bar = tqdm(SECTIONS, desc="sigprop demo", unit="section", disable=not progress)
    for key, fn in bar:
        bar.set_postfix_str(key)
        t0 = time.perf_counter()
        sections.append(fn(bench, points, out))
        timings[key] = round(time.perf_counter() - t0, 3)
    seconds = time.perf_counter() - start

    env = _environment()
    results = results_document(
        cfg,
        sections,
        quick=bool(quick) if config is None else None,
        seed=seed,
        device=device,
        environment=env,
        section_seconds=timings,
        seconds=seconds,
    )
    markdown = report_markdown(
        cfg, sections, quick=quick, seed=seed, device=device, seconds=seconds, environment=env
    )
    report_path, results_path = write_report(out, markdown, results)
    return DemoResult(
        out=str(out),
        report=str(report_path),
        results=str(results_path),
        figures=tuple(str(f) for s in sections for f in s.figures),
        verdicts={s.key: s.verdict for s in sections},
        sections={s.key: to_jsonable(s.numbers, f"sections.{s.key}") for s in sections},
        config=cfg.to_dict(),
        quick=bool(quick),
        seed=seed,
        device=device,
        seconds=seconds,
        section_seconds=timings,
        claims=tuple(c for s in sections for c in s.claims),
    )


def _environment() -> dict:
    import numpy as np
    import torch

    import sigprop

    return {
        "sigprop": sigprop.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }
