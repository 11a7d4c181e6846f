"""The rule that turns the indicators into one answer, and the words that explain it.

Signal (forward correlations) and gradients (backward norms) both decay or grow
exponentially with depth away from the edge of chaos, each at its own depth scale
(Schoenholz et al. 2017, arXiv 1611.01232, §3–4). Measured in e-folds — the correlation
depth D = −ln|dc^L/dc^0| and the gradient depth |G| = |ln E‖δ¹‖²/E‖δᴸ‖²| — a network
carries information from its input to its output and error signals back only while the
larger of the two, moved by the finite-fan-in gap β = Σ_l 1/k_l between the mean-field
(mean) and the typical (median) log-gain (:mod:`.indicators`),

    E = max(D, |G|) + β,

stays within a budget B of e-folds that training can still absorb. Schoenholz et al. find
networks trainable up to L ≈ 6ξ_c, i.e. D ≈ 6, with their optimiser and number of steps
(their Fig. 5–6). The score is the fraction of the budget left, on a log scale,

    score = 2^(−E/B) ∈ (0, 1],  trainable ⇔ score ≥ ½ ⇔ E ≤ B,

times 0 where the mask leaves nothing to train: no input→output path (``connected`` is
False), no effective weight, or a fully pruned layer that no parallel path bypasses (layer
collapse; Tanaka et al. 2020, arXiv 2006.05467; Hayou et al. 2021, arXiv 2002.08797).

B is the one constant. :data:`DEPTH_BUDGET` is fixed on the calibration sweep
``examples/trainability/calibration/*.toml`` (digits, MLPs of width 100, seed 100; disjoint
from the validation and unseen sweeps) as the budget that classifies it best
(:func:`sigprop.diagnostics.trainable.evaluation.calibrate_budget`), and is used unchanged
everywhere else; ``depth_budget=`` overrides it for a different training budget (the
calibration's is 10 epochs of plain SGD at learning rate 0.05, batch 64).
"""

from __future__ import annotations

import math

import numpy as np

from sigprop.diagnostics.trainable.indicators import Indicators

__all__ = [
    "DEPTH_BUDGET",
    "effective_depth",
    "is_cut",
    "reasons",
    "score",
    "score_of_depth",
    "structural_failure",
]

#: B: e-folds of signal or gradient loss a network is predicted to train through. Fixed on
#: the calibration split (88 runs: ``calibrate_budget`` gives 6.344, balanced accuracy 0.94,
#: AUC 0.989), close to Schoenholz et al.'s 6ξ_c (module doc).
DEPTH_BUDGET = 6.34


def effective_depth(ind: Indicators) -> float:
    """E = max(D, |G|) + β in e-folds (module doc); ``inf`` past float64's range."""
    values = [ind.correlation_depth, abs(ind.log_grad_ratio)]
    mean_field = max(math.inf if math.isnan(v) else v for v in values)
    return mean_field + ind.fan_in_depth


def is_cut(connected: bool | None, effective_density: float | None, n_collapsed: int) -> bool:
    """The mask leaves nothing to train: no input→output path, no effective weight, or a
    fully pruned layer that no skip bypasses (module doc)."""
    return connected is False or effective_density == 0.0 or n_collapsed > 0


def score_of_depth(e, budget: float = DEPTH_BUDGET):
    """2^(−E/B) for E e-folds (scalar or array); 0 where E is infinite (a cut mask)."""
    e = np.asarray(e, dtype=np.float64)
    with np.errstate(over="ignore"):
        out = np.where(np.isinf(e), 0.0, np.exp2(-e / budget))
    return float(out) if out.ndim == 0 else out


def structural_failure(ind: Indicators) -> str | None:
    """Why the mask leaves nothing to train, or ``None``."""
    if not is_cut(ind.connected, ind.effective_density, len(ind.collapsed_layers)):
        return None
    if ind.connected is False or ind.effective_density == 0.0:
        return (
            "no input→output path survives the mask (effective density 0): the output "
            "cannot depend on the input and no gradient reaches the first layer"
        )
    if ind.collapsed_layers:
        names = ", ".join(ind.collapsed_layers[:3])
        more = f" and {len(ind.collapsed_layers) - 3} more" if len(ind.collapsed_layers) > 3 else ""
        return (
            f"layer collapse: every weight of {names}{more} is pruned and no skip bypasses it, "
            "so the network is cut in two"
        )
    return None


def score(ind: Indicators, budget: float = DEPTH_BUDGET) -> float:
    """2^(−E/B), or 0 for a structural failure (module doc)."""
    if structural_failure(ind) is not None:
        return 0.0
    return score_of_depth(effective_depth(ind), budget)


def _decades(nats: float) -> str:
    if math.isinf(nats):
        return "beyond float64's range"
    return f"10^{nats / math.log(10):+.1f}"


def reasons(ind: Indicators, budget: float = DEPTH_BUDGET) -> tuple[str, ...]:
    """The one or two indicators that decide, in words (module doc)."""
    failure = structural_failure(ind)
    if failure is not None:
        return (failure,)
    d, g, beta = ind.correlation_depth, ind.log_grad_ratio, ind.fan_in_depth
    e = effective_depth(ind)
    out = []
    if e <= budget:
        out.append(
            f"signal and gradients cross all {ind.depth} layers within {e:.2g} e-folds "
            f"(correlation depth {d:.2g}, gradient ratio ‖δ¹‖²/‖δᴸ‖² = {_decades(g)}, "
            f"finite fan-in {beta:.2g}), inside the budget of {budget:g}"
        )
        if ind.bypassed_layers:
            out.append(
                f"{len(ind.bypassed_layers)} fully pruned layer(s) are bypassed by skip "
                f"connections ({', '.join(ind.bypassed_layers[:3])}): their blocks carry "
                "the signal through the skip only"
            )
        return tuple(out)
    # E > B: explain the largest of the three terms, and the next one when it alone would
    # use up more than half the budget
    terms = sorted(
        [("fan-in", beta), ("gradient", abs(g)), ("correlation", d)],
        key=lambda t: -(0.0 if math.isnan(t[1]) else t[1]),
    )
    chosen = [terms[0][0]] + [n for n, v in terms[1:2] if v > budget / 2]
    for name in chosen:
        out.append(_explain(name, ind, budget))
    out.append(
        f"in all {e:.3g} e-folds (correlation depth {d:.2g}, gradient depth {abs(g):.2g}, "
        f"finite fan-in {beta:.2g}) against a budget of {budget:g}"
    )
    return tuple(out)


def _explain(name: str, ind: Indicators, budget: float) -> str:
    d, g, beta = ind.correlation_depth, ind.log_grad_ratio, ind.fan_in_depth
    if name == "fan-in":
        return (
            f"the mask leaves units as few as {ind.min_fan_in:.2g} effective inputs on "
            f"average (Σ 1/k = {beta:.2g} e-folds): far from the many-input limit the "
            "theory's signal propagation assumes, a typical path carries much less than the "
            "mean; a denser mask, or one that keeps paths (SynFlow), keeps more inputs per unit"
        )
    if name == "correlation":
        return (
            f"two inputs' correlation is forgotten within ξ_c ≈ {ind.xi_c:.2g} layers: "
            f"{ind.depth} layers are {d:.2g} correlation depth scales (Schoenholz et al. find "
            "networks trainable up to about 6ξ_c)"
        )
    if g < 0:
        why = "the network is deep in the ordered phase (χ < 1)"
        loss = ind.sigma_w2_loss
        if loss is not None and loss < 0.9:
            why = (
                f"the mask left {loss:.2g} of the initial σ_w² in a layer, which put the "
                "net deep in the ordered phase; sigprop.nn.init.rescale_ restores χ ≈ 1"
            )
        return f"gradients shrink by {_decades(g)} between the last and the first layer: {why}"
    if ind.batch_norm:
        return (
            f"gradients grow by {_decades(g)} between the last and the first layer: "
            "batch normalisation's batch statistics amplify the backward pass layer by "
            "layer (Yang et al. 2019, arXiv 1902.08129)"
        )
    return (
        f"gradients grow by {_decades(g)} between the last and the first layer: the "
        "network is in the chaotic phase (χ > 1); lower σ_w² towards the edge of "
        "chaos (sigprop.nn.init.eoc_init_)"
    )
