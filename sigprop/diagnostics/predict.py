"""``predict(spec, ...)``: the mean-field theory's per-layer predictions for one model.

Layer l (1-based, l = 1..L) of a chain computes h^l = W^l x^{l−1} + b^l with x^0 = the input
and x^{l−1} = φ_{l−1}(h^{l−1}), φ_{l−1} the activation following layer l−1 (the identity where
the spec has none). Each layer enters with its *measured* σ_{w,l}² and σ_{b,l}² (``describe``),
so masks act through the weights themselves: a random mask of density ρ gives ρσ_w², a
rescaled one the dense σ_w² (Hayou et al. 2021, arXiv 2002.08797, §4). Then

* q^1 = σ_{w,1}² q0 + σ_{b,1}²,  q^l = σ_{w,l}² E[φ_{l−1}(√q^{l−1} z)²] + σ_{b,l}²
  (variance map; Poole et al. 2016, arXiv 1606.05340, eq. 3);
* c^l from the covariance map at (q^{l−1}, c^{l−1}), c^0 = c0 (ibid., eq. 4–5);
* χ^1 = σ_{w,1}², χ^l = σ_{w,l}² E[φ′_{l−1}(√q^{l−1} z)²]: the backward growth
  ‖δ^{l−1}‖²/‖δ^l‖² (Schoenholz et al. 2017, arXiv 1611.01232, eq. 10, layer by layer);
* ``grad_ratio[l] = Π_{k=l+1}^{L} χ^k`` — E‖δ^l‖²/E‖δ^L‖², = χ₁^{L−l} at the fixed point
  with equal layers (ibid., §3);
* ``weight_grad_ratio``: E‖(∂L/∂W^l) ⊙ M^l‖² ∝ ρ_l · fan_in_l · E[(x^{l−1})²] · E‖δ^l‖²
  (the weight gradient is δ^l x^{l−1}ᵀ, and δ, x are independent in the mean-field limit),
  normalised by the last layer;
* the moments (and optionally the density) of the squared singular values of the
  input–output Jacobian J = D^L W^L ⋯ D^1 W^1 from free probability
  (Pennington, Schoenholz & Ganguli 2017, arXiv 1711.04735, eq. 8–15), through
  ``sigprop.theory.spectra`` with each layer's σ_w² and q^l; D^l = I for layers without an
  activation.

Residual networks (``spec.structure == "residual"``; sigprop.nn ``ResidualBlock``,
y = x + λ·branch(x) with an identity shortcut) follow the residual mean-field recursion of
Yang & Schoenholz 2017 (arXiv 1712.08969, §3, "reduced" residual nets) and Hayou et al. 2021
(arXiv 2002.08797, §4, Stable ResNet); see :func:`predict` and ``_predict_residual``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

import numpy as np

from sigprop._json import to_jsonable
from sigprop.diagnostics.spec import ModelSpec
from sigprop.validate import InvalidInput, positive_float

__all__ = ["Prediction", "hidden_jacobian_spread", "input_moments", "predict"]


def _arr(a):
    return None if a is None else np.asarray(a).tolist()


def _law_dict(law) -> dict:
    return {
        "x": _arr(law.x),
        "density": _arr(law.density),
        "atoms": _arr(law.atoms),
        "atom_masses": _arr(law.atom_masses),
        "edge": float(law.edge),
    }


def input_moments(inputs) -> tuple[float, float | None]:
    """``(q0, c0)`` of a batch: q0 = mean over inputs of (1/N_0)‖x‖², c0 = mean cosine of the
    pairs (0, 1), (2, 3), … (``None`` with a single input) — the same pairs ``measure`` uses.

    ``inputs`` is a torch tensor or array of shape (B, *sample_shape).
    """
    if hasattr(inputs, "detach"):
        inputs = inputs.detach().cpu().double().numpy()
    x = np.asarray(inputs, dtype=np.float64)
    if x.ndim < 2 or x.shape[0] == 0:
        raise InvalidInput("inputs must have shape (batch, *sample_shape) with batch ≥ 1")
    if not np.all(np.isfinite(x)):
        raise InvalidInput("inputs contain NaN or inf")
    x = x.reshape(x.shape[0], -1)
    q0 = float(np.mean(x**2))
    n_pairs = x.shape[0] // 2
    if n_pairs == 0:
        return q0, None
    a, b = x[0 : 2 * n_pairs : 2], x[1 : 2 * n_pairs : 2]
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    if np.any(norms == 0):
        raise InvalidInput("an input of a correlation pair is all zeros")
    return q0, float(np.mean(np.sum(a * b, axis=1) / norms))


@dataclass(frozen=True)
class Prediction:
    """Mean-field predictions for one model (layers in forward order, index l−1 for layer l).

    Fields
    ------
    names: weight-layer names (from the spec).
    q: (L,) predicted q^l (variance of a pre-activation of layer l).
    c: (L,) predicted correlation c^l of two inputs, ``None`` when no c0 was given.
    chi: (L,) χ^l, the predicted ‖δ^{l−1}‖²/‖δ^l‖² (χ^1 = σ_{w,1}²).
    grad_ratio: (L,) Π_{k>l} χ^k (1 for the last layer).
    weight_grad_ratio: (L,) predicted ‖∂L/∂W^l ⊙ M^l‖² / ‖∂L/∂W^L ⊙ M^L‖².
    sigma_w2, sigma_b2, density: (L,) the per-layer inputs the prediction used.
    q0, c0: the input moments used.
    jacobian_moments: (2,) [m₁, m₂], m_k = lim (1/N) tr (JJᵀ)^k (free probability), or
        ``None`` when the spectra theory does not apply (see ``notes``).
    jacobian_density: with ``density=True``, the predicted law of the squared singular
        values (``sigprop.theory.spectra.JacobianDensity``: atoms, continuous density on a
        grid, ``cdf(t)``); else ``None``.
    notes: assumptions and anything the prediction had to leave out.
    c_slope: (L,) chains with c0: dc^l/dc^{l−1}, the slope of layer l's correlation map along
        the trajectory (Π c_slope = dc^L/dc^0, the sensitivity of the output correlation to
        the input's), else ``None``.
    block_names: residual specs only (else empty): the residual blocks in forward order.
    stream_q: (B,) residual specs: E[y_b²] of the residual stream after block b, ``None``
        otherwise.
    stream_c: (B,) residual specs with c0: the stream's correlation of two inputs after block
        b, else ``None``.
    block_chi: (B,) residual specs: E‖∂L/∂y_{b−1}‖² / E‖∂L/∂y_b‖² = 1 + λ_b² Π_{k ∈ branch b}
        χ^k, the backward growth of the stream across block b; else ``None``.
    nodes: with a spec from ``describe(model, example_input)``: module qualified name →
        record of the graph engine (``sigprop.diagnostics.graph.nodes``: ``q``, ``mean``,
        ``correlation``, ``avg_sq_ch_mean``, ``avg_ch_var``, ``g``, ``weight_grad``,
        ``weight_grad_ratio``, ``node``, ``op``); empty without a graph.
    blocks: module names whose output is a residual sum (graph specs).
    unreachable: module names the engine could not reach (downstream of an unmapped node).
    propagation: the engine's ``PropagationResult`` (graph specs), else ``None``.
    """

    names: tuple[str, ...]
    q: np.ndarray
    c: np.ndarray | None
    chi: np.ndarray
    grad_ratio: np.ndarray
    weight_grad_ratio: np.ndarray
    sigma_w2: np.ndarray
    sigma_b2: np.ndarray
    density: np.ndarray
    q0: float
    c0: float | None
    jacobian_moments: np.ndarray | None = None
    jacobian_density: object | None = None
    notes: tuple[str, ...] = ()
    c_slope: np.ndarray | None = None
    block_names: tuple[str, ...] = ()
    stream_q: np.ndarray | None = None
    stream_c: np.ndarray | None = None
    block_chi: np.ndarray | None = None
    nodes: dict = field(default_factory=dict)
    blocks: tuple[str, ...] = ()
    unreachable: tuple[str, ...] = ()
    propagation: object | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        out = {
            "names": list(self.names),
            "q": _arr(self.q),
            "c": _arr(self.c),
            "chi": _arr(self.chi),
            "grad_ratio": _arr(self.grad_ratio),
            "weight_grad_ratio": _arr(self.weight_grad_ratio),
            "sigma_w2": _arr(self.sigma_w2),
            "sigma_b2": _arr(self.sigma_b2),
            "density": _arr(self.density),
            "q0": self.q0,
            "c0": self.c0,
            "jacobian_moments": _arr(self.jacobian_moments),
            "jacobian_density": None
            if self.jacobian_density is None
            else _law_dict(self.jacobian_density),
            "notes": list(self.notes),
            "c_slope": _arr(self.c_slope),
            "block_names": list(self.block_names),
            "stream_q": _arr(self.stream_q),
            "stream_c": _arr(self.stream_c),
            "block_chi": _arr(self.block_chi),
            "nodes": self.nodes,
            "blocks": list(self.blocks),
            "unreachable": list(self.unreachable),
        }
        return to_jsonable(out, "Prediction")


def _layer_maps(activation: str | None, q_prev: float, c_prev: float | None):
    """(E φ(√q z)², E φ′(√q z)², E φ(u_a)φ(u_b), E φ′(u_a)φ′(u_b)) at variance q_prev,
    correlation c_prev, from ``sigprop.theory.meanfield`` (``None`` = the identity,
    ``"linear"`` in the registry); the two pair kernels are ``None`` without c_prev.

    The covariance uses the kernel directly, not ``meanfield.c_map``: off the fixed point the
    correlation must be normalised by the *new* variance q^l, not by q^{l−1}.

    A name (or ``None``) determines the activation, so those results are memoised: the
    same network is predicted again and again (the demo's sections, trainability), and
    without a closed form each pair kernel is a 2-D quadrature of ~10 ms.
    """
    if activation is None or isinstance(activation, str):
        return _layer_maps_of_name(activation, float(q_prev), _opt_float(c_prev))
    return _layer_maps_uncached(activation, q_prev, c_prev)


def _opt_float(x: float | None) -> float | None:
    return None if x is None else float(x)


@functools.lru_cache(maxsize=4096)
def _layer_maps_of_name(activation: str | None, q_prev: float, c_prev: float | None):
    return _layer_maps_uncached(activation, q_prev, c_prev)


def _layer_maps_uncached(activation, q_prev: float, c_prev: float | None):
    from sigprop.theory import meanfield

    act = "linear" if activation is None else activation
    mom = meanfield.moments(act, q_prev)
    cov = dcov = None
    if c_prev is not None and q_prev > 0:
        k, dk = meanfield.kernel(act, q_prev, c_prev)
        cov, dcov = float(k), float(dk)
    return float(mom["g0"]), float(mom["g1"]), cov, dcov


def predict(
    spec: ModelSpec,
    *,
    q0: float,
    c0: float | None = None,
    density: bool = False,
    density_points: int = 400,
    weights: str = "gaussian",
    batch_size: int | None = None,
    backward: bool = True,
    means: str = "quenched",
) -> Prediction:
    """Per-layer mean-field predictions for the model ``spec`` describes.

    Parameters
    ----------
    spec: ``describe(model)``.
    q0: input second moment (1/N_0)‖x‖²; ``c0``: input-pair cosine (``input_moments``).
    density: also predict the law of the Jacobian's squared singular values (free
        multiplicative convolution over the layers, each with its own activation);
        ``density_points``: its grid size.
    weights: ``"gaussian"`` or ``"orthogonal"`` — the weight ensemble whose S-transform the
        spectrum uses (arXiv 1711.04735 eq. 15); σ_w² and q^l come from the spec regardless.
    batch_size: B of train-mode BatchNorm and of the batch summaries for graph specs
        (default: the example input's batch size).
    backward: graph specs only: False skips the engine's backward pass (no gradient
        entries: ``g``/``weight_grad`` None, χ and gradient ratios NaN), about a third of
        the time (forward moments suffice for a signal-propagation plot).
    means: graph specs only: ``"quenched"`` (default) maps the channel means through the
        layers' own signed weights, exactly, the fluctuations sign-averaged;
        ``"annealed"`` averages the means over the weights' signs too, replacing each
        channel's frozen offset Σ_i w_oi μ_i by its mean square (``theory.propagation``
        README, ``dense.py``; the accuracy of each on real architectures is measured in
        ``tests/diagnostics/test_graph_predict.py``).

    Graph specs (``describe(model, example_input)``) are propagated through
    ``sigprop.theory.propagation`` (its README states every rule and approximation):
    ``Prediction.nodes`` has a record per module, ``unreachable`` the modules downstream of
    untranslated nodes (never guessed; their per-layer entries are NaN). For chains and
    residual specs with a graph the layer arrays are the closed-form recursions below and
    ``nodes`` comes from the engine.

    Residual specs (``structure == "residual"``, blocks y = x + λ·branch(x) of
    ``sigprop.nn.models.ResidualBlock`` with identity shortcuts) follow the residual
    mean-field recursion (Yang & Schoenholz 2017, arXiv 1712.08969, §3; Hayou et al. 2021,
    arXiv 2002.08797, §4): at init the branch's weights are independent of the stream, so
    variances and covariances add,

    * E[y_b²] = E[y_{b−1}²] + λ² q_branch, q_branch the variance of the branch output from
      the branch's own layer-by-layer maps started at the stream (each layer with its measured
      σ_w², masks included, and σ_b²); for ReLU one-layer branches with σ_b = 0 this gives
      q^B = (1 + λ²σ_w²/2)^B q⁰ (Hayou et al. 2021, arXiv 2002.08797, §5), bounded for
      λ = 1/√B (Stable ResNet);
    * the covariance of two inputs likewise, E[y_a y_b] adds λ² times the branch's output
      covariance;
    * backward, under the gradient-independence assumption (the weights met backward are
      independent of those met forward, Yang & Schoenholz 2017 §3; Schoenholz et al. 2017
      §3), the cross term ⟨δ, J_branchᵀ δ⟩ vanishes in expectation, so
      E‖δ_{y_{b−1}}‖² = (1 + λ² Π_{k ∈ branch} χ^k) E‖δ_{y_b}‖² (``block_chi``) and the
      squared gradient of every weight layer's output is a product of these factors and the
      χ^k met on the way.

    For residual specs, ``q``, ``c`` are still the statistics of each weight layer's own
    output (what ``measure`` hooks; for a branch layer its output before the scale λ),
    ``chi[l]`` is ‖δ^{l−1}‖²/‖δ^l‖² between consecutive weight layers in forward order (as
    ``measure`` reports it, e.g. (1 + λ²χ)/λ² from a stem to the first branch layer), and
    ``stream_q``/``stream_c``/``block_chi`` describe the residual stream. The Jacobian moments
    are left out (``None``): the input–output Jacobian Π_b (I + λ J_b) is a product of sums
    of free and identity terms, not the product of free factors that
    ``sigprop.theory.spectra`` implements, and no equally clean closed statement is
    implemented here.

    Raises
    ------
    ValueError
        for a spec with unmapped parts, for residual blocks outside what the recursion
        covers (weight layers outside the block's ``branch``, e.g. a projection shortcut;
        an activation applied to a stream that is not Gaussian), or for invalid q0/c0.
    """
    if not isinstance(spec, ModelSpec):
        raise InvalidInput(
            f"predict expects a ModelSpec (from describe), got {type(spec).__name__}"
        )
    if spec.graph is not None:
        from sigprop.diagnostics.predict_graph import predict_graph

        q0 = positive_float(
            q0, "q0 (input second moment (1/N_0)|x|^2; zero inputs carry no signal)"
        )
        c0 = _check_c0(c0)
        graph_pred = predict_graph(spec, q0, c0, batch_size, backward=backward, means=means)
        if spec.structure == "graph":
            return graph_pred
        extra = {
            k: getattr(graph_pred, k) for k in ("nodes", "blocks", "unreachable", "propagation")
        }
        plain = replace(spec, graph=None)
        return replace(
            predict(
                plain, q0=q0, c0=c0, density=density, density_points=density_points, weights=weights
            ),
            **extra,
        )
    if spec.unmapped:
        raise InvalidInput(
            "the spec has parts the theory cannot map, so per-layer predictions would be "
            f"guesses: {', '.join(spec.unmapped)} (describe(model, example_input=x) "
            "translates any traced model into the graph engine)"
        )
    # q0 = 0 (all-zero inputs) makes every weight gradient of a bias-free stack zero, and the
    # ratios, normalised by the last layer's, 0/0: refused rather than returned as NaN.
    q0 = positive_float(q0, "q0 (input second moment (1/N_0)|x|^2; zero inputs carry no signal)")
    c0 = _check_c0(c0)
    if spec.structure == "residual":
        from sigprop.diagnostics.predict_residual import _predict_residual

        return _predict_residual(spec, q0, c0, density)
    layers = spec.layers
    n = len(layers)
    sw2 = np.array([layer.sigma_w2 for layer in layers])
    sb2 = np.array([layer.sigma_b2 for layer in layers])
    q = np.zeros(n)
    c = np.zeros(n) if c0 is not None else None
    chi = np.zeros(n)
    slope = np.zeros(n) if c0 is not None else None
    second = np.zeros(n)  # E[(x^{l-1})²]: the mean square of layer l's input
    q_prev, c_prev, act_prev = q0, c0, None
    for i, layer in enumerate(layers):
        second[i], dphi2, cov, dcov = _layer_maps(act_prev, q_prev, c_prev)
        q[i] = sw2[i] * second[i] + sb2[i]
        chi[i] = sw2[i] * dphi2
        if c is not None:
            # q_ab^l = σ_w² E[φ(u_a)φ(u_b)] + σ_b², c^l = q_ab^l / q^l (arXiv 1606.05340 eq. 4–5)
            c[i] = 1.0 if cov is None or q[i] == 0 else (sw2[i] * cov + sb2[i]) / q[i]
            c[i] = min(1.0, max(-1.0, c[i]))  # |c| ≤ 1 exactly; round-off can leave 1 + ε
            # dc^l/dc^{l−1} = σ_w² q^{l−1} E[φ′(u_a)φ′(u_b)] / q^l: Price's theorem,
            # ∂E[φ(u_a)φ(u_b)]/∂Cov(u_a, u_b) = E[φ′φ′] (at c* this is χ_c, arXiv 1611.01232
            # eq. 9)
            slope[i] = 0.0 if dcov is None or q[i] == 0 else sw2[i] * q_prev * dcov / q[i]
            c_prev = c[i]
        q_prev, act_prev = q[i], layer.activation
    # Π_{k>l} χ^k, by a reverse cumulative product (1 for the last layer); past float64's
    # range it is inf (chaotic) or 0 (ordered), which is the honest answer, not an error.
    grad_ratio = np.ones(n)
    with np.errstate(over="ignore", under="ignore"):
        for i in range(n - 2, -1, -1):
            grad_ratio[i] = grad_ratio[i + 1] * chi[i + 1]
    notes = []
    moments, law = _spectrum(layers, q, sw2, weights, density, density_points, notes)
    return _prediction(
        spec,
        q=q,
        c=c,
        chi=chi,
        grad_ratio=grad_ratio,
        second=second,
        q0=q0,
        c0=c0,
        c_slope=slope,
        jacobian_moments=moments,
        jacobian_density=law,
        notes=tuple(notes),
    )


def _check_c0(c0):
    if c0 is None:
        return None
    c0 = float(c0)
    if not -1.0 <= c0 <= 1.0:
        raise InvalidInput(f"c0 (input correlation) must be in [-1, 1], got {c0}")
    return c0


def _prediction(spec: ModelSpec, *, grad_ratio, second, **fields) -> Prediction:
    """A :class:`Prediction` for ``spec``'s layers: σ_w², σ_b², ρ read from the spec and the
    weight-gradient ratio ρ_l · fan_in_l · E[(x^{l−1})²] · E‖δ^l‖² normalised by the last
    layer's (module docstring; Schoenholz et al., arXiv 1611.01232, §3)."""
    layers = spec.layers
    rho = np.array([layer.density for layer in layers])
    fan_in = np.array([layer.fan_in for layer in layers], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):  # inf/NaN where grad_ratio is 0 or inf
        wg = rho * fan_in * second * grad_ratio
    return Prediction(
        names=spec.names,
        grad_ratio=grad_ratio,
        weight_grad_ratio=wg / wg[-1],
        sigma_w2=np.array([layer.sigma_w2 for layer in layers]),
        sigma_b2=np.array([layer.sigma_b2 for layer in layers]),
        density=rho,
        **fields,
    )


def hidden_jacobian_spread(spec: ModelSpec, prediction: Prediction) -> float | None:
    """m₂/m₁² − 1 of the squared singular values of the Jacobian of the network's square
    hidden block: the consecutive linear layers with fan_in = n_units after the first layer
    (input and read-out layers of other widths left out), from the same free-probability
    moments as ``Prediction.jacobian_moments``; ``None`` for fewer than two such layers or
    where the spectra theory refuses a layer's law."""
    if spec.graph is not None and spec.structure == "graph":
        return None
    idx = [
        i
        for i, layer in enumerate(spec.layers)
        if i > 0 and layer.kind == "linear" and layer.fan_in == layer.n_units
    ]
    if len(idx) < 2 or idx != list(range(idx[0], idx[-1] + 1)):
        return None
    layers = [spec.layers[i] for i in idx]
    sw2 = np.array([layer.sigma_w2 for layer in layers])
    q = np.asarray(prediction.q)[idx]
    if not np.all(sw2 > 0):  # an empty layer: the Jacobian is zero, its spread undefined
        return None
    try:
        moments, _ = _spectrum(layers, q, sw2, "gaussian", False, 0, [])
    except InvalidInput:  # a law the spectra theory refuses (e.g. q beyond its quadrature)
        return None
    if moments is None or not moments[0] > 0 or not np.isfinite(moments[1]):
        return None
    return float(moments[1] / moments[0] ** 2 - 1.0)


def _spectrum(layers, q, sw2, weights, density, density_points, notes):
    """Free-probability m₁, m₂ (and density) of JJᵀ for the chain (arXiv 1711.04735 §2).

    Layer l contributes W^l and D^l = φ_l′(h^l) (D^l = I without an activation). Layers
    sharing an activation go through ``spectra.jacobian_moments_layers`` together; groups
    combine by free multiplicative convolution, under which means multiply and normalised
    variances m₂/m₁² − 1 add (the property that function documents, eq. 10–17).
    """
    from sigprop.theory import spectra

    if any(layer.kind != "linear" for layer in layers):
        notes.append("Jacobian spectrum predicted for (masked) linear layers only")
        return None, None
    widths = {layer.n_units for layer in layers} | {layers[0].fan_in}
    if len(widths) > 1:
        notes.append(
            "Jacobian spectrum theory assumes square layers of equal width; widths differ "
            f"({sorted(widths)})"
        )
        return None, None
    acts = ["linear" if layer.activation is None else layer.activation for layer in layers]
    log_m1, nvar = 0.0, 0.0  # in log space: deep chaotic/ordered chains over/underflow m1
    for act in dict.fromkeys(acts):
        idx = [i for i, a in enumerate(acts) if a == act]
        group = spectra.jacobian_moments_layers(act, np.sqrt(sw2[idx]), q[idx], weights=weights)
        log_m1 += group.log_m1
        nvar += group.normalized_variance
    with np.errstate(over="ignore", under="ignore"):  # inf / 0 past float64's range
        moments = np.array([np.exp(log_m1), np.exp(2.0 * log_m1 + np.log1p(nvar))])
    law = None
    if density:  # one activation per layer (a linear read-out included)
        law = spectra.jacobian_density_layers(
            acts if len(set(acts)) > 1 else acts[0],
            np.sqrt(sw2),
            q,
            weights=weights,
            n_points=density_points,
        )
    return moments, law
