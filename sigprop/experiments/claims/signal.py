"""Section b: signal and gradient flow, layer by layer, for the dense, randomly pruned and
rescaled networks in each phase: q^l and c^l from the mean-field maps against hook
measurements, gradient ratios from the χ-product against measured ones."""

from __future__ import annotations

import math
from pathlib import Path

from sigprop.experiments.claims.bench import Bench, PhasePoints, derive_seed, variants
from sigprop.experiments.claims.core import Claim, Section, finite_size_tolerance, log_ratio_err

__all__ = ["signal_section", "signal_tolerances"]

#: Where the q-map prediction of each variant comes from: the variance map (dense), the map
#: with σ_w² → ρσ_w² for a random mask (pruned), the rescaling trick (rescaled).
_Q_SOURCE = {
    "dense": ("1606.05340", "eq. (3)–(5)"),
    "pruned": ("2002.08797", "§3"),
    "rescaled": ("2002.08797", "§4"),
}


def signal_tolerances(width: int, depth: int, density: float) -> dict:
    """Tolerances of the section for networks of density ``density``, in units of the
    finite-size noise s = √(2/K), K = ρN the number of kept connections per hidden unit: a
    layer's q^l is a mean over N units of pre-activations that each sum K weighted inputs of
    ONE network, so its relative error is ≈ s; a correlation's absolute error is
    ≈ (1 − c²)/√K ≤ s/√2; gradient ratios compound one such factor per layer, so
    ‖δ¹‖²/‖δᴸ‖² is off by ≈ s·√L/ln 10 decades. Medians over layers (robust to single
    fluctuations) must stay within one s-unit, the compounded gradient ratios within two."""
    n_layers = depth + 1
    return {
        "finite_size_noise_s": finite_size_tolerance(width, density=density),
        "q_median_rel": finite_size_tolerance(width, density=density),
        "c_median_abs": finite_size_tolerance(width, density=density, scale=1 / math.sqrt(2)),
        "grad_decades": finite_size_tolerance(
            width, density=density, n_sigma=2.0, compounded=n_layers, decades=True
        ),
    }


def _case_claims(case: str, variant: str, r: dict, t: dict, k: int, figure: str) -> list[Claim]:
    """The four claims of one (phase, network) case from its numbers ``r`` and tolerances
    ``t``: one row per claim (what, statement, source, prediction, measurement, error key,
    tolerance key, metric, tolerance origin)."""
    noise = f"s = √(2/K) = {t['finite_size_noise_s']:.3f}, K = {k} kept connections per unit"
    compounded = f"two s-units compounded over L layers, 2s√L/ln 10 ({noise})"
    decades = "decades (|log10 measured/predicted|)"
    chi_product = ("1611.01232", "§4")
    table = [
        (
            "q",
            f"{variant} network: q^l follows the variance map with each layer's σ_w²",
            _Q_SOURCE[variant],
            f"q^(L−1) = {r['q_predicted'][-2]:.4g}",
            f"q^(L−1) = {r['q_measured'][-2]:.4g}",
            ("q_rel_err_median", "q_median_rel"),
            "median over layers of the relative error of q^l",
            f"one s-unit of the finite-size noise of q^l ({noise})",
        ),
        (
            "c",
            f"{variant} network: c^l follows the correlation map",
            ("1606.05340", "eq. (3)–(5)"),
            f"c^(L−1) = {r['c_predicted'][-2]:.4g}",
            f"c^(L−1) = {r['c_measured'][-2]:.4g}",
            ("c_abs_err_median", "c_median_abs"),
            "median over layers of the absolute error of c^l",
            f"a correlation's error (1 − c²)/√K ≤ s/√2 ({noise})",
        ),
        (
            "delta",
            f"{variant} network: ‖δ¹‖²/‖δᴸ‖² = Π χ^l",
            chi_product,
            float(r["delta_ratio_predicted"][0]),
            float(r["delta_ratio_measured"][0]),
            ("first_layer_delta_ratio_err_decades", "grad_decades"),
            decades,
            compounded,
        ),
        (
            "weight_grad",
            f"{variant} network: weight-gradient ratios ‖∂L/∂W^l‖²/‖∂L/∂W^L‖² follow the χ-product",
            chi_product,
            "per-layer ratios of `predict`'s weight_grad_ratio",
            f"median error {r['weight_grad_ratio_median_err_decades']:.3g} decades",
            ("weight_grad_ratio_median_err_decades", "grad_decades"),
            f"median over layers of {decades}",
            compounded,
        ),
    ]
    return [
        Claim.judge(
            id=f"signal/{case}/{what}",
            statement=statement,
            paper=paper,
            equation=equation,
            prediction=prediction,
            measurement=measurement,
            error=r[error_key],
            tolerance=t[tol_key],
            metric=metric,
            derivation=derivation,
            figure=figure,
        )
        for what, statement, (paper, equation), prediction, measurement, (
            error_key,
            tol_key,
        ), metric, derivation in table
    ]


def signal_section(bench: Bench, points: PhasePoints, out: str | Path) -> Section:
    """Per-layer q^l, c^l and gradient ratios of the dense, pruned and rescaled networks at
    each phase of ``points``, held against ``sigprop.diagnostics.predict`` (Poole et al.,
    arXiv 1606.05340, eq. (3)–(5); Schoenholz et al., arXiv 1611.01232, §4; Hayou et al.,
    arXiv 2002.08797, §3–4). Writes ``demo_signal_flow.png`` into ``out``."""
    import numpy as np

    from sigprop.diagnostics import compare, describe, gradient_flow, input_moments, measure
    from sigprop.diagnostics import predict as predict_fn
    from sigprop.plotting.claims import plot_signal_flow
    from sigprop.plotting.report import markdown_table

    cfg = bench.cfg
    figure = "demo_signal_flow.png"
    x, _ = bench.probe(cfg.n_probe)
    q0, c0 = input_moments(x[: 2 * cfg.n_pairs])
    tol = {
        "dense": signal_tolerances(cfg.width, cfg.depth, 1.0),
        "sparse": signal_tolerances(cfg.width, cfg.depth, cfg.density),
    }
    results: dict = {"q0": q0, "c0": c0, "tolerance": tol, "phases": {}}
    rows, claims = [], []
    for phase in points.phases:
        results["phases"][phase] = {}
        for variant, model in variants(bench, points, phase).items():
            spec = describe(model)
            pred = predict_fn(spec, q0=q0, c0=c0)
            meas = measure(
                model, x[: 2 * cfg.n_pairs], spec=spec, seed=derive_seed(bench.seed, phase)
            )
            agr = compare(pred, meas)
            flow = gradient_flow(
                model,
                x[: cfg.n_probe],
                spec=spec,
                seed=derive_seed(bench.seed, phase, "flow"),
                predict_kwargs={"q0": q0, "c0": c0},
                progress=False,
            )
            r = {
                "density": float(spec.density),
                "q_predicted": pred.q,
                "q_measured": meas.q,
                "c_predicted": pred.c,
                "c_measured": meas.c,
                "chi_predicted": pred.chi,
                "chi_measured": meas.chi,
                "delta_ratio_predicted": pred.grad_ratio,
                "delta_ratio_measured": meas.grad_ratio,
                "weight_grad_ratio_predicted": flow.theory_grad_ratio,
                "weight_grad_ratio_measured": flow.grad_ratio,
                "q_rel_err_median": float(np.median(agr.q_rel_err)),
                "q_rel_err_max": float(np.max(agr.q_rel_err)),
                "c_abs_err_median": float(np.median(agr.c_abs_err)),
                "c_abs_err_max": float(np.max(agr.c_abs_err)),
                "first_layer_delta_ratio_err_decades": log_ratio_err(
                    meas.grad_ratio[:1], pred.grad_ratio[:1]
                ),
                "weight_grad_ratio_median_err_decades": log_ratio_err(
                    flow.grad_ratio, flow.theory_grad_ratio, reduce="median"
                ),
            }
            density = 1.0 if variant == "dense" else cfg.density
            case = _case_claims(
                f"{phase}/{variant}",
                variant,
                r,
                tol["dense" if variant == "dense" else "sparse"],
                round(density * cfg.width),
                figure,
            )
            claims += case
            r["agree"] = all(c.agrees for c in case)
            results["phases"][phase][variant] = r
            rows.append(
                (
                    phase,
                    variant,
                    float(pred.q[-2]),
                    float(meas.q[-2]),
                    r["q_rel_err_median"],
                    r["c_abs_err_median"],
                    float(pred.grad_ratio[0]),
                    float(meas.grad_ratio[0]),
                    r["first_layer_delta_ratio_err_decades"],
                    r["weight_grad_ratio_median_err_decades"],
                    "yes" if r["agree"] else "**no**",
                )
            )
    results["agree"] = all(c.agrees for c in claims)
    fig_path = plot_signal_flow(
        results["phases"],
        Path(out) / figure,
        sigma_w=dict(points.sigma_w),
        title=f"Signal and gradient flow, {cfg.depth}-layer {cfg.activation} MLP, "
        f"width {cfg.width}; pruned: random mask ρ = {cfg.density} "
        "(lines: mean-field theory, circles: measured)",
    )
    md = [
        f"**Prediction.** `sigprop.diagnostics.predict` iterates the variance and covariance "
        f"maps layer by layer with each layer's measured σ_w² (Poole et al., arXiv "
        f"1606.05340, eq. 3–5) and multiplies the per-layer χ^l backwards for the gradient "
        f"ratio ‖δ^l‖²/‖δ^L‖² (Schoenholz et al., arXiv 1611.01232, §4). A random mask of "
        f"density ρ = {cfg.density} without rescaling turns σ_w² into ρσ_w² (Hayou et al., "
        f"arXiv 2002.08797, §3): the pruned network falls deep into the ordered phase, "
        f"signal variance collapses to ≈ σ_b² and gradients vanish like (ρχ₁)^(L−l). The "
        f"rescaling trick (ibid., §4) restores the dense σ_w², so the rescaled network "
        f"should follow the dense prediction.",
        "",
        f"**Measurement.** Forward hooks on {2 * cfg.n_pairs} inputs ({cfg.n_pairs} pairs for "
        f"c^l; input moments q0 = {q0:.3f}, c0 = {c0:.3f}); backpropagated norms with "
        "Gaussian output probes; weight-gradient norms of a random-projection loss "
        "(`gradient_flow`).",
        "",
        markdown_table(
            [
                "phase",
                "network",
                "q^(L−1) pred",
                "q^(L−1) meas",
                "median rel. err q",
                "median abs. err c",
                "‖δ¹‖²/‖δᴸ‖² pred",
                "meas",
                "err (decades)",
                "median weight-grad err (decades)",
                "agree",
            ],
            rows,
        ),
        "",
        "Tolerances come from the finite-size noise s = √(2/K), K = ρN kept connections per "
        f"unit (s = {tol['dense']['finite_size_noise_s']:.3f} dense, "
        f"{tol['sparse']['finite_size_noise_s']:.3f} at ρ = {cfg.density}): median relative "
        "error of q ≤ s, median absolute error of c ≤ s/√2, first-layer gradient ratio and "
        f"median weight-gradient ratio within 2s√L/ln 10 decades "
        f"({tol['dense']['grad_decades']:.2f} dense, {tol['sparse']['grad_decades']:.2f} "
        "sparse).",
    ]
    return Section(
        "signal",
        "b. Signal and gradient flow",
        tuple(claims),
        results,
        "\n".join(md),
        (fig_path,),
    )
