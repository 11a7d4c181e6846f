"""``predict`` for specs that carry a translated graph: the graph engine's answer.

``sigprop.theory.propagation.propagate`` runs the translated model (README there: every
rule, its paper and its approximations) from iid N(0, q0) inputs with the tracked pair at
correlation c0, batch B; the records per module come from
:func:`sigprop.diagnostics.graph.nodes.predicted_nodes`. The per-weight-layer arrays of
:class:`~sigprop.diagnostics.predict.Prediction` are read off the same result:
q^l and c^l at the layer's output, E‖δ^l‖² = E[δ²]·(elements of the output),
χ^l = E‖δ^{l−1}‖²/E‖δ^l‖² (δ^0 the input's gradient) and the weight-gradient norms
E‖∇W ⊙ M‖²/B normalised by the last layer's.
"""

from __future__ import annotations

import math

import numpy as np

from sigprop.diagnostics.graph.nodes import predicted_nodes
from sigprop.diagnostics.predict import Prediction
from sigprop.diagnostics.spec import ModelSpec
from sigprop.theory.propagation import propagate
from sigprop.validate import positive_int

__all__ = ["predict_graph"]


def predict_graph(
    spec: ModelSpec,
    q0: float,
    c0: float | None,
    batch_size=None,
    *,
    backward: bool = True,
    means: str = "quenched",
) -> Prediction:
    """The engine's prediction for ``spec`` (module doc)."""
    tr = spec.graph
    b = positive_int(batch_size if batch_size is not None else spec.batch_size or 32, "batch_size")
    result = propagate(tr.graph, q0=q0, c0=c0, batch_size=b, backward=bool(backward), means=means)
    records, unreached = predicted_nodes(tr, result)
    layers = spec.layers
    n = len(layers)
    q, c, dsq, wg = (np.full(n, math.nan) for _ in range(4))

    def delta_sq(tn: str) -> float:
        res = result.nodes.get(tn)
        if res is None or res.backward is None:
            return math.nan
        return float(res.backward["g_mean"]) * result.moments[tn].q.size

    for i, layer in enumerate(layers):
        rec = records.get(layer.name)
        if rec is None:
            continue
        q[i] = rec["q"]
        if rec["correlation"] is not None:
            c[i] = rec["correlation"]
        dsq[i] = delta_sq(rec["node"])
        if rec["weight_grad"] is not None:
            wg[i] = rec["weight_grad"]
    inputs = [node.name for node in tr.graph.nodes if node.op == "input"]
    d_in = delta_sq(inputs[0]) if inputs else math.nan
    with np.errstate(divide="ignore", invalid="ignore"):
        chi = np.concatenate([[d_in], dsq[:-1]]) / dsq
        grad_ratio = dsq / dsq[-1]
        wg_ratio = wg / wg[-1]
    notes = ["graph engine: sigprop.theory.propagation (rules and approximations in its README)"]
    if tr.unmapped:
        notes.append(
            "untranslated nodes (they and everything downstream are not predicted): "
            + "; ".join(tr.describe_unmapped())
        )
    return Prediction(
        names=spec.names,
        q=q,
        c=c if c0 is not None else None,
        chi=chi,
        grad_ratio=grad_ratio,
        weight_grad_ratio=wg_ratio,
        sigma_w2=np.array([layer.sigma_w2 for layer in layers]),
        sigma_b2=np.array([layer.sigma_b2 for layer in layers]),
        density=np.array([layer.density for layer in layers]),
        q0=q0,
        c0=c0,
        notes=tuple(notes),
        nodes=records,
        blocks=tuple(tr.blocks),
        unreachable=tuple(unreached),
        propagation=result,
    )
