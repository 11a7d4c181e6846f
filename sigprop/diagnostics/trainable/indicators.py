"""The theory's indicators of trainability for one model, as it is.

Every number here is a mean-field prediction (``describe`` → ``predict``) or a count of the
mask (``check_collapse``); nothing is fitted. For layers l = 1..L in forward order:

* ``log_grad_ratio`` G = ln(E‖δ¹‖²/E‖δᴸ‖²) = Σ_{l≥2} ln χ^l: how many e-folds the squared
  gradient gains (> 0, chaotic) or loses (< 0, ordered) between the last layer and the
  first (Schoenholz et al. 2017, arXiv 1611.01232, §3: ‖δ^l‖² ∝ χ₁^{L−l}, the depth scale
  ξ_∇ = −1/ln χ₁);
* ``correlation_depth`` D = −ln |dc^L/dc^0|: how many e-folds the output correlation of two
  inputs is less sensitive to theirs. At a fixed point each layer contributes −ln χ_c = 1/ξ_c
  (ibid., eq. 9), so D = L/ξ_c for a uniform network; in the ordered phase (c* = 1,
  χ_c = χ₁) D ≈ −G, and in the chaotic phase D grows as the network forgets its inputs
  while G may stay small. Off the fixed point (pruned, mixed or non-stationary layers) D is
  the exact product of the layers' c-map slopes along the predicted trajectory: for chains
  ``Prediction.c_slope`` (Price's theorem), for any other traced graph a central
  difference of the graph engine's output correlation in c0;
* ``signal_fraction`` = 1 − q^L(no input)/q^L, the part of the output variance that depends
  on the input at all (chains; against the bias floor);
* ``jacobian_spread`` = m₂/m₁² − 1 of the Jacobian's squared singular values (free
  probability, Pennington et al. 2017, arXiv 1711.04735): of the input–output Jacobian
  where ``predict`` has it, else of a chain's square hidden block
  (``predict.hidden_jacobian_spread``); reported, not part of the rule;
* ``fan_in_depth`` β = Σ_l 1/k_l, k_l the layer's mean *effective* fan-in (its kept,
  trainable weights on an input–output path per output unit — a frozen DCT offset carries
  signal but is not counted; ``min_fan_in`` = min_l k_l). Mean field is the
  limit k → ∞: a unit summing k inputs has a squared gain χ²_k/k whose logarithm has
  variance ψ′(k/2) ≈ 2/k, so the log-gain of a path through the layers is approximately
  Gaussian with variance s² ≈ Σ_l 2/k_l (Hanin & Nica 2019, arXiv 1812.05994: the
  log-norm of a product of random layers is Gaussian with variance ∝ Σ 1/n_l, n_l the
  width — here the effective fan-in), and its typical (median) value lies s²/2 = β
  e-folds below the mean that the mean-field G and D describe (a log-normal's mean is
  e^{μ + s²/2});
* the mask: connectivity, collapsed layers (with and without a bypass) and the exact
  effective density (Vysogorets & Kempe 2021, arXiv 2107.02306) from ``check_collapse``;
  ``sigma_w2_loss`` — the smallest ratio of a pruned layer's measured σ_w² to its
  initialiser's (a random mask of density ρ gives ρ; the rescaling trick 1; Hayou et al.
  2021, arXiv 2002.08797, §4).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from sigprop.validate import InvalidInput

__all__ = ["DEFAULT_C0", "Indicators", "compute_indicators"]

#: Input correlation used without data: a pair of distinct inputs of moderate similarity.
DEFAULT_C0 = 0.5
#: Half-width of the central difference in c0 on graph models.
_DC = 1e-3
#: Batch of the synthetic example input of graph models without data.
_EXAMPLE_BATCH = 32


@dataclass(frozen=True)
class Indicators:
    """The theory's trainability indicators (module doc); layers in forward order.

    ``depth`` is the number of weight layers, ``names`` their module names, ``chi`` the
    predicted χ^l = E‖δ^{l−1}‖²/E‖δ^l‖², ``q`` the predicted q^l. Entries that do not apply
    are ``None``; ``notes`` says why. ``batch_norm``: the model has BatchNorm layers.
    """

    structure: str
    depth: int
    names: tuple[str, ...]
    q0: float
    c0: float
    chi: tuple[float, ...]
    q: tuple[float, ...]
    log_grad_ratio: float
    correlation_depth: float
    signal_fraction: float | None
    jacobian_spread: float | None
    density: float
    effective_density: float | None
    connected: bool | None
    collapsed_layers: tuple[str, ...]
    bypassed_layers: tuple[str, ...]
    min_fan_in: float
    fan_in_depth: float
    sigma_w2_loss: float | None
    data: bool
    batch_norm: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def xi_c(self) -> float:
        """The network's effective correlation depth scale L/D (layers)."""
        if self.correlation_depth <= 0:
            return math.inf
        return self.depth / self.correlation_depth

    def to_dict(self) -> dict:
        from sigprop._json import to_jsonable

        return {**to_jsonable(self), "xi_c": to_jsonable(self.xi_c)}


def _first_tensor(inputs):
    """The input tensor of ``inputs`` (read by ``sigprop.nn.utils.as_batches``: a tensor, an
    ``(inputs, targets)`` pair, or an iterable of batches, of which the first is used)."""
    from sigprop.nn.utils import as_batches

    x = next(iter(as_batches(inputs, method="trainability", targets_required=False)), (None,))[0]
    if x is None or x.ndim < 2 or x.shape[0] < 2:
        raise InvalidInput(
            "inputs must hold at least two samples (a pair gives the input correlation), "
            f"got shape {None if x is None else tuple(x.shape)}"
        )
    return x


def _log_abs(x: float) -> float:
    x = abs(float(x))
    return -math.inf if x == 0 else math.log(x)


def _sigma_w2_loss(model, spec) -> float | None:
    """Smallest measured σ_w² / initialiser σ_w² over pruned layers with an init record."""
    modules = dict(model.named_modules())
    ratios = []
    for layer in spec.layers:
        record = getattr(modules.get(layer.name), "sigprop_init", None)
        sw = getattr(record, "sigma_w", None)
        if layer.density < 1.0 and sw:
            ratios.append(layer.sigma_w2 / float(sw) ** 2)
    return min(ratios) if ratios else None


def _fan_in_depth(report) -> tuple[float, float]:
    """(min_l k_l, Σ_l 1/k_l) over the layers no skip bypasses, k_l the mean effective
    fan-in: kept weights of layer l on an input–output path per output unit. A frozen dense
    offset (DCT-plus-sparse: α·D) is not counted: it carries the signal but cannot learn, so
    k_l is the number of inputs per unit that training can change."""
    ks = []
    for layer in report.layers:
        if layer.bypassed or layer.units == 0:
            continue
        ks.append(layer.effective_kept / layer.units)
    if not ks:
        return 0.0, math.inf
    with np.errstate(divide="ignore"):
        beta = float(np.sum(1.0 / np.asarray(ks, dtype=np.float64)))
    return float(min(ks)), beta


def _chain_indicators(spec, q0: float, c0: float):
    """(prediction, G, D, signal fraction) of a chain, all in closed form."""
    from sigprop.diagnostics.predict import predict

    pred = predict(spec, q0=q0, c0=c0)
    chi = np.asarray(pred.chi, dtype=np.float64)
    slopes = np.abs(np.asarray(pred.c_slope, dtype=np.float64))
    with np.errstate(divide="ignore"):  # a zero χ or slope: −inf, the honest answer
        g = float(np.sum(np.log(chi[1:]))) if len(chi) > 1 else 0.0
        d = -float(np.sum(np.log(slopes)))
    # The bias floor: q^L of the same network fed no signal at all (q0 → 0).
    floor = predict(spec, q0=1e-300, c0=None).q[-1]
    q_last = float(pred.q[-1])
    frac = 0.0 if q_last <= 0 else float(max(0.0, 1.0 - floor / q_last))
    return pred, g, d, frac


def _graph_indicators(spec, q0: float, c0: float, batch_size: int | None):
    """(prediction, G, D) from the graph engine; D by a central difference in c0."""
    from sigprop.diagnostics.predict import predict

    pred = predict(spec, q0=q0, c0=c0, batch_size=batch_size)
    if pred.unreachable:
        raise InvalidInput(
            "the theory cannot reach every layer of this model (unmapped: "
            f"{', '.join(spec.unmapped) or 'see predict().notes'}), so its trainability "
            "would be a guess"
        )
    ratio = float(pred.grad_ratio[0])
    g = _log_abs(ratio) if math.isfinite(ratio) else math.inf
    h = min(_DC, (1.0 - abs(c0)) / 2.0)
    lo, hi = max(-1.0, c0 - h), min(1.0, c0 + h)
    c_hi = predict(spec, q0=q0, c0=hi, batch_size=batch_size, backward=False).c[-1]
    c_lo = predict(spec, q0=q0, c0=lo, batch_size=batch_size, backward=False).c[-1]
    d = -_log_abs((c_hi - c_lo) / (hi - lo))
    return pred, g, d


def compute_indicators(
    model,
    inputs=None,
    *,
    input_shape=None,
    batch_size: int | None = None,
    c0: float | None = None,
) -> Indicators:
    """The :class:`Indicators` of ``model`` (module doc).

    ``inputs`` (a batch, or an ``(inputs, targets)`` pair) sets q0 and c0
    (``input_moments``) and the example input of traced models; without it q0 = 1 (a
    standardised input) and c0 = :data:`DEFAULT_C0` (or ``c0``), and traced models need
    ``input_shape`` (per sample) for a synthetic N(0, 1) example batch. Chains of weight
    layers and elementwise activations are predicted in closed form; anything else is
    traced into the graph engine (``describe(model, example_input)``).
    """
    import torch

    from sigprop.diagnostics import check_collapse, describe, input_moments
    from sigprop.diagnostics.predict import hidden_jacobian_spread

    notes = []
    x = None
    if inputs is not None:
        x = _first_tensor(inputs)
        q0, c_data = input_moments(x)
        c0 = c_data if c0 is None else float(c0)
    else:
        q0, c0 = 1.0, DEFAULT_C0 if c0 is None else float(c0)
        notes.append(f"no data: q0 = 1 and c0 = {c0:g} (standardised inputs)")
    if not -1.0 < c0 < 1.0:
        raise InvalidInput(f"the input correlation c0 must lie in (-1, 1), got {c0!r}")
    spec = describe(model)
    frac = None
    if spec.structure == "sequential" and spec.complete:
        pred, g, d, frac = _chain_indicators(spec, q0, c0)
        shape = tuple(x.shape[1:]) if x is not None else input_shape
    else:
        if x is not None:
            example = x
        elif input_shape is not None:
            shape = tuple(int(s) for s in input_shape)
            param = next(model.parameters(), None)
            dtype = param.dtype if param is not None else torch.get_default_dtype()
            example = torch.randn((_EXAMPLE_BATCH, *shape), dtype=dtype)
        else:
            raise InvalidInput(
                "this model is not a plain chain of layers, so the theory needs its graph: "
                "pass inputs or input_shape (per sample, e.g. (3, 32, 32))"
            )
        shape = tuple(example.shape[1:])
        spec = describe(model, example)
        pred, g, d = _graph_indicators(spec, q0, c0, batch_size)
    report = check_collapse(model, input_shape=shape if len(shape or ()) > 1 else None)
    eff = report.effective_sparsity
    bypassed = tuple(report.bypassed_layers)
    collapsed = tuple(n for n in report.collapsed_layers if n not in bypassed)
    spread = None
    if pred.jacobian_moments is not None:
        m1, m2 = (float(v) for v in pred.jacobian_moments)
        if m1 > 0 and math.isfinite(m2):
            spread = m2 / (m1 * m1) - 1.0
    elif spec.structure == "sequential":
        spread = hidden_jacobian_spread(spec, pred)
    fan_in, beta = _fan_in_depth(report)
    notes.extend(pred.notes)
    return Indicators(
        structure=spec.structure,
        depth=len(spec.layers),
        names=spec.names,
        q0=float(q0),
        c0=float(c0),
        chi=tuple(float(v) for v in pred.chi),
        q=tuple(float(v) for v in pred.q),
        log_grad_ratio=g,
        correlation_depth=d,
        signal_fraction=frac,
        jacobian_spread=spread,
        density=float(report.kept / report.total) if report.total else 0.0,
        effective_density=None if eff is None else 1.0 - float(eff),
        connected=report.connected,
        collapsed_layers=collapsed,
        bypassed_layers=bypassed,
        min_fan_in=float(fan_in),
        fan_in_depth=float(beta),
        sigma_w2_loss=_sigma_w2_loss(model, spec),
        data=inputs is not None,
        batch_norm=any(
            isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()
        ),
        notes=tuple(notes),
    )
