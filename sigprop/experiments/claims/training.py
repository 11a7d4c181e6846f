"""Section e: training dense, pruned, pruned+rescaled and DCT-plus-sparse networks at the same
density, with :func:`sigprop.diagnostics.trainability` (made before any training step) as the
prediction of which ones train."""

from __future__ import annotations

import math
from pathlib import Path

from sigprop.experiments.claims.bench import Bench, PhasePoints, build, derive_seed, variants
from sigprop.experiments.claims.core import Claim, Section

__all__ = ["training_section"]


def training_section(bench: Bench, points: PhasePoints, out: str | Path) -> Section:
    """Train each network at the EOC of ``points`` with SGD and hold "trained" (final test
    accuracy clearly above chance) against ``sigprop.diagnostics.trainability(model, x)``
    on the probe batch, computed before training (E = max(D, |G|) + β e-folds within the
    calibrated budget B; Schoenholz et al., arXiv 1611.01232, §4). Writes
    ``demo_training.png`` into ``out``."""
    from sigprop.diagnostics import describe, input_moments, predict, trainability
    from sigprop.diagnostics.trainable import DEPTH_BUDGET
    from sigprop.experiments.train import train
    from sigprop.plotting.claims import plot_training_comparison
    from sigprop.plotting.report import markdown_table

    cfg = bench.cfg
    figure = "demo_training.png"
    models = variants(bench, points, "eoc")
    models["dct"] = build(bench, points, "eoc", layer="dct")
    x, _ = bench.probe(cfg.n_probe)
    q0, c0 = input_moments(x)
    chance = 1.0 / bench.dataset.n_classes
    results: dict = {"chance": chance, "runs": {}}
    for name, model in models.items():
        pred = predict(describe(model), q0=q0, c0=c0)
        verdict = trainability(model, x)
        res = train(
            model,
            bench.dataset,
            epochs=cfg.epochs,
            batch_size=cfg.batch_size,
            optimizer="sgd",
            lr=cfg.lr,
            momentum=cfg.momentum,
            device=bench.device,
            seed=derive_seed(bench.seed, "train"),
            progress=bench.progress,
        )
        results["runs"][name] = {
            "density": float(describe(model).density),
            "predicted_first_layer_grad_ratio": float(pred.grad_ratio[0]),
            "predicted_trainable": verdict.trainable,
            "trainability_score": verdict.score,
            "effective_depth": verdict.effective_depth,
            "trainability_reason": verdict.reasons[0],
            "train_loss": res.train_loss,
            "train_accuracy": res.train_accuracy,
            "test_accuracy": res.test_accuracy,
            "final_test_accuracy": res.final_test_accuracy,
            "diverged": res.diverged,
        }
    # Measurement: "trained" when the final test accuracy exceeds chance by more than 5
    # binomial standard errors of a chance-level classifier on the test set (the question
    # is whether it learns at all, not how fast).
    n_test = int(bench.dataset.y_test.shape[0])
    threshold = chance + 5.0 * math.sqrt(chance * (1.0 - chance) / n_test)
    rows, claims = [], []
    for name, r in results["runs"].items():
        g = r["predicted_first_layer_grad_ratio"]
        predicted = r["predicted_trainable"]
        measured = r["final_test_accuracy"] >= threshold
        r["trained"] = bool(measured)
        r["agree"] = bool(predicted == measured)
        claims.append(
            Claim.judge(
                id=f"training/{name}",
                statement=f"{name}: trains if and only if sigprop.diagnostics.trainability "
                "says so before training (signal and gradient loss E = max(D, |G|) + β "
                "within the calibrated budget B)",
                paper="1611.01232",
                equation="§4",
                prediction=f"{'trainable' if predicted else 'not trainable'} "
                f"(score {r['trainability_score']:.3f}, E = {r['effective_depth']:.3g}; "
                f"‖δ¹‖²/‖δᴸ‖² = {g:.3g})",
                measurement=f"{'trained' if measured else 'did not train'} "
                f"(test accuracy {r['final_test_accuracy']:.3f})",
                error=0.0 if predicted == measured else 1.0,
                tolerance=0.0,
                metric="outcomes that differ (trained vs predicted trainable)",
                derivation=f"'trained' = final test accuracy ≥ {threshold:.3f}: chance "
                f"{chance:.2f} plus 5 binomial standard errors √(p(1−p)/n) of a chance-level "
                f"classifier on n = {n_test} test samples",
                figure=figure,
            )
        )
        rows.append(
            (
                name,
                r["density"],
                g,
                r["trainability_score"],
                "trainable" if predicted else "not trainable",
                r["final_test_accuracy"],
                "yes" if measured else "no",
                "yes" if predicted == measured else "**no**",
            )
        )
    results["threshold_accuracy"] = threshold
    results["agree"] = all(c.agrees for c in claims)
    labels = {
        "dense": "dense",
        "pruned": f"random mask ρ = {cfg.density}",
        "rescaled": "random mask + rescaling",
        "dct": "DCT + sparse",
    }
    fig_path = plot_training_comparison(
        results["runs"],
        Path(out) / figure,
        chance=chance,
        labels=labels,
        title=f"Training a {cfg.depth}-layer {cfg.activation} MLP on {cfg.dataset} "
        f"at density {cfg.density}",
    )
    md = [
        "**Prediction.** Before any training step, `sigprop.diagnostics.trainability` on the "
        "probe batch: the correlation depth D, the gradient depth G = ln ‖δ¹‖²/‖δᴸ‖² "
        "(Schoenholz et al., arXiv 1611.01232, §4) and the finite-fan-in gap β give "
        f"E = max(D, |G|) + β e-folds; trainable ⇔ E ≤ B = {DEPTH_BUDGET:g} (calibrated on "
        "the trainability sweeps, `examples/trainability/`). Dense, rescaled (Hayou et al., "
        "arXiv 2002.08797, §4) and DCT-plus-sparse (Price & Tanner, arXiv 2102.07655; α·D "
        "orthogonal with α = σ_w at the EOC, S = 0) keep χ^l ≈ 1; the unrescaled random mask "
        f"(ρ = {cfg.density}) has χ^l ≈ ρχ₁.",
        "",
        f"**Measurement.** SGD (lr {cfg.lr}, momentum {cfg.momentum}, batch {cfg.batch_size}) "
        f"for {cfg.epochs} epochs on `{cfg.dataset}`; 'trained' = final test accuracy ≥ "
        f"{threshold:.3f} (chance {chance:.2f} plus 5 binomial standard errors on "
        f"{n_test} test samples).",
        "",
        markdown_table(
            [
                "network",
                "density",
                "‖δ¹‖²/‖δᴸ‖² pred",
                "trainability score",
                "prediction",
                "test accuracy",
                "trained",
                "agree",
            ],
            rows,
        ),
    ]
    return Section("training", "e. Training", tuple(claims), results, "\n".join(md), (fig_path,))
