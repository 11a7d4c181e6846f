"""Section a: the EOC point, the depth scales of the phase points, and the dense network's
measured fixed point and χ₁ held against them."""

from __future__ import annotations

import math

from sigprop.experiments.claims.bench import Bench, PhasePoints, build, derive_seed
from sigprop.experiments.claims.core import Claim, Section, finite_size_tolerance

__all__ = ["HAYOU_TANH", "eoc_section"]

#: Hayou et al.'s EOC constant for tanh at σ_b = 0.2 (official code sAviOr287/imagenet_ICLR,
#: models/base/init_utils.py; arXiv 2002.08797), about 0.5% off the exact EOC.
HAYOU_TANH = {"sigma_b": 0.2, "sigma_w": 1.2981}


def eoc_section(bench: Bench, points: PhasePoints) -> Section:
    """Depth scales of each phase of ``points`` and two claims on the dense network built at
    ``points``' EOC σ_w: its deep layers sit at q* and its χ^l average to χ₁ = 1 (Poole et
    al., arXiv 1606.05340, eq. (3)–(5); Schoenholz et al., arXiv 1611.01232, §3).

    ``points`` is the prediction under test: built from a wrong σ_w (or a wrong q*), the
    claims disagree."""
    import numpy as np

    from sigprop import theory
    from sigprop.diagnostics import describe, input_moments, measure, predict
    from sigprop.plotting.report import markdown_table

    cfg = bench.cfg
    eoc = points.eoc
    factors = dict(cfg.phase_factors)
    phases = {}
    for name, sw in points.sigma_w:
        ds = theory.depth_scales(cfg.activation, sw, cfg.sigma_b)
        phases[name] = {
            "sigma_w2_factor": factors[name],
            "sigma_w": sw,
            "sigma_w2": sw**2,
            "q_star": float(ds.q_star),
            "chi1": float(ds.chi1),
            "c_star": float(ds.c_star),
            "xi_q": float(ds.xi_q),
            "xi_c": float(ds.xi_c),
        }

    # Measurement: the dense network at the EOC. Deep layers sit at q* and χ^l ≈ χ₁ = 1.
    model = build(bench, points, "eoc")
    x, _ = bench.probe(cfg.n_probe)
    spec = describe(model)
    meas = measure(model, x, spec=spec, seed=derive_seed(bench.seed, "eoc-probes"))
    q0, c0 = input_moments(x)
    pred = predict(spec, q0=q0, c0=c0)
    hidden = slice(cfg.depth // 2, cfg.depth - 1)  # second half of the hidden layers
    n_avg = hidden.stop - hidden.start
    q_meas = float(np.mean(meas.q[hidden]))
    # χ^l measured layer by layer (ratio of backpropagated norms); its geometric mean over the
    # same deep layers estimates χ₁ with the per-layer finite-width noise averaged out.
    chi_meas = float(np.exp(np.mean(np.log(meas.chi[hidden]))))
    q_pred_net = float(np.mean(pred.q[hidden]))
    # Tolerance: one network of width N has per-layer relative fluctuations of order
    # s = √(2/N) in q^l and χ^l (a mean of N squared, nearly Gaussian pre-activations);
    # successive layers are correlated over ≈ ξ_q ≤ 2 layers, so a mean over n layers has
    # about n/2 independent terms. We accept two standard errors: 2·s/√(n/2).
    tol = finite_size_tolerance(cfg.width, n_sigma=2.0, averaged=n_avg / 2.0)
    derivation = (
        f"two standard errors of one network's finite-width noise: s = √(2/N) = "
        f"{finite_size_tolerance(cfg.width):.3f} per layer (N = {cfg.width}), layers correlated "
        f"over ξ_q ≤ 2, so the mean over {n_avg} layers has {n_avg / 2:g} independent terms: "
        f"2s/√({n_avg / 2:g}) = {tol:.3f}"
    )
    q_err = abs(q_meas - eoc.q_star) / eoc.q_star
    layers = f"layers {hidden.start + 1}–{hidden.stop}"
    claims = (
        Claim.judge(
            id="eoc/q_star",
            statement=f"the deep layers of the dense network at σ_w = {eoc.sigma_w:.4f} sit at "
            "the fixed point q* of the variance map",
            paper="1606.05340",
            equation="eq. (3)–(5)",
            prediction=float(eoc.q_star),
            measurement=q_meas,
            error=q_err,
            tolerance=tol,
            metric=f"relative error of mean q^l, {layers}",
            derivation=derivation,
        ),
        Claim.judge(
            id="eoc/chi1",
            statement=f"χ₁ = 1 at σ_w = {eoc.sigma_w:.4f} (the edge of chaos)",
            paper="1611.01232",
            equation="§3",
            prediction=1.0,
            measurement=chi_meas,
            error=abs(chi_meas - 1.0),
            tolerance=tol,
            metric=f"absolute error of the geometric mean of χ^l, {layers}",
            derivation=derivation,
        ),
    )
    numbers = {
        "activation": cfg.activation,
        "eoc": eoc.to_dict(),
        "phases": phases,
        "measured": {
            "q_deep_layers": q_meas,
            "q_deep_layers_predicted_for_this_draw": q_pred_net,
            "q_rel_err_vs_q_star": q_err,
            "chi1_geometric_mean": chi_meas,
            "chi1_abs_err": abs(chi_meas - 1.0),
            "layers": [hidden.start + 1, hidden.stop],
        },
    }
    hayou = None
    if cfg.activation == "tanh" and math.isclose(cfg.sigma_b, HAYOU_TANH["sigma_b"]):
        hayou = {
            "sigma_w": HAYOU_TANH["sigma_w"],
            "rel_diff": abs(eoc.sigma_w - HAYOU_TANH["sigma_w"]) / eoc.sigma_w,
            "chi1_at_their_sigma_w": float(
                theory.chi1(cfg.activation, HAYOU_TANH["sigma_w"], cfg.sigma_b)
            ),
        }
        numbers["hayou_constant"] = hayou
    numbers["tolerance"] = {"q_rel": tol, "chi1_abs": tol}
    numbers["agree"] = all(c.agrees for c in claims)

    rows = [
        (
            name,
            p["sigma_w2"],
            p["q_star"],
            p["chi1"],
            p["c_star"],
            p["xi_q"],
            "∞" if not math.isfinite(p["xi_c"]) else p["xi_c"],
            "∞" if not math.isfinite(p["xi_c"]) else 6 * p["xi_c"],
        )
        for name, p in phases.items()
    ]
    md = [
        f"**Prediction.** For φ = {cfg.activation} and σ_b = {cfg.sigma_b} the mean-field "
        f"theory (Poole et al., arXiv 1606.05340, eq. 3–5; Schoenholz et al., arXiv "
        f"1611.01232, §3) puts the edge of chaos at σ_w = {eoc.sigma_w:.6f} "
        f"(σ_w² = {eoc.sigma_w**2:.6f}), with fixed point q* = {eoc.q_star:.6f} and "
        f"χ₁ = {eoc.chi1:.12f}. The comparison phases scale σ_w² by the factors below; "
        "ξ_c diverges on the EOC, and Schoenholz et al. find networks trainable up to about "
        "6ξ_c layers.",
        "",
        markdown_table(["phase", "σ_w²", "q*", "χ₁", "c*", "ξ_q", "ξ_c", "6ξ_c"], rows),
        "",
        f"**Measurement.** The dense {cfg.depth}-layer network at the EOC "
        f"(width {cfg.width}, {cfg.n_probe} inputs): mean q^l over {layers} = {q_meas:.4f} "
        f"(q* = {eoc.q_star:.4f}, relative error {q_err:.2%}); geometric mean of the "
        f"measured χ^l over those layers = {chi_meas:.4f} (prediction 1).",
    ]
    if hayou is not None:
        md += [
            "",
            f"Hayou et al.'s code uses σ_w = {hayou['sigma_w']} at σ_b = 0.2: "
            f"{hayou['rel_diff']:.2%} from the exact value, χ₁ = "
            f"{hayou['chi1_at_their_sigma_w']:.4f} there.",
        ]
    return Section("eoc", "a. Edge of chaos", claims, numbers, "\n".join(md))
