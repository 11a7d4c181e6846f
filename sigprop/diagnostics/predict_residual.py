"""Residual networks in ``predict``: sigprop.nn ``ResidualBlock`` (y = x + λ·branch(x),
identity shortcut) by the residual mean-field recursion of Yang & Schoenholz 2017
(arXiv 1712.08969, §3) and Hayou et al. 2021 (arXiv 2002.08797, §4); see
:func:`sigprop.diagnostics.predict.predict`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sigprop.diagnostics.predict import Prediction, _layer_maps, _prediction
from sigprop.diagnostics.spec import ModelSpec
from sigprop.validate import InvalidInput

# --------------------------------------------------------------------------------------------
# Residual networks
# --------------------------------------------------------------------------------------------


@dataclass
class _Stream:
    """A tensor of the forward pass in mean field: per-unit second moment ``m`` = E[s²],
    covariance ``k`` = E[s_a s_b] of two inputs (``None`` without c0), whether s is Gaussian
    (a weight layer's output or a sum of independent ones) and a pending activation ``act``
    (s's value is act(u), u the Gaussian of moments m, k); ``var`` is its node in the
    backward graph."""

    m: float
    k: float | None
    gaussian: bool
    act: str | None
    var: int


class _Backward:
    """Backward mean-field graph: E‖δ_src‖² = Σ_edges factor · E‖δ_dst‖² (cross terms vanish
    under gradient independence, arXiv 1712.08969 §3). Nodes are created in forward order,
    so a reverse sweep visits every consumer before its source."""

    def __init__(self) -> None:
        self.n = 1  # node 0: the input
        self.edges: list[tuple[int, int, float]] = []

    def node(self, *sources: tuple[int, float]) -> int:
        dst = self.n
        self.n += 1
        self.edges.extend((src, dst, factor) for src, factor in sources)
        return dst

    def sweep(self, output: int) -> np.ndarray:
        g = np.zeros(self.n)
        g[output] = 1.0
        for src, dst, factor in sorted(self.edges, key=lambda e: -e[1]):
            g[src] += factor * g[dst]
        return g


def _corr(s: _Stream) -> float | None:
    if s.k is None:
        return None
    return 1.0 if s.m == 0 else s.k / s.m


def _materialise(s: _Stream, graph: _Backward) -> _Stream:
    """Apply ``s``'s pending activation: the result is φ(u), no longer Gaussian."""
    if s.act is None:
        return s
    m, dphi2, cov, _ = _layer_maps(s.act, s.m, _corr(s))
    k = None if s.k is None else (cov if cov is not None else m)
    return _Stream(m, k, False, None, graph.node((s.var, dphi2)))


def _consume(layer, s: _Stream, graph: _Backward, where: str):
    """Layer ``layer`` applied to stream ``s`` (through its input activation, if any).

    Returns the layer's output stream and E[x²] of its input; h = W x + b gives
    q = σ_w² E[x²] + σ_b², q_ab = σ_w² E[x_a x_b] + σ_b² (arXiv 1606.05340 eq. 3–5) and the
    backward factor χ = σ_w² E[φ′²] (arXiv 1611.01232 eq. 10).
    """
    act = layer.input_activation or s.act
    if layer.input_activation and s.act and layer.input_activation != s.act:
        raise InvalidInput(
            f"{where}: layer {layer.name!r} applies {layer.input_activation} to an output "
            f"already passed through {s.act}; composed activations are not mapped"
        )
    if act is None:
        second, dphi2, cov = s.m, 1.0, s.k
    elif not s.gaussian:
        raise InvalidInput(
            f"{where}: layer {layer.name!r} applies {act} to a residual stream that is not "
            "Gaussian (it carries an activation's output), which the mean-field recursion "
            "does not describe"
        )
    else:
        second, dphi2, cov, _ = _layer_maps(act, s.m, _corr(s))
        if s.k is not None and cov is None:  # s.m == 0: everything is zero
            cov = 0.0
    q = layer.sigma_w2 * second + layer.sigma_b2
    k = None if cov is None else layer.sigma_w2 * cov + layer.sigma_b2
    out = _Stream(q, k, True, layer.activation, graph.node((s.var, layer.sigma_w2 * dphi2)))
    return out, second, layer.sigma_w2 * dphi2


def _segments(spec: ModelSpec) -> list[tuple[str | None, list[int]]]:
    """Consecutive runs of plain layers (block ``None``, one layer each) and residual blocks;
    checks that each block is a sigprop.nn ``ResidualBlock`` branch with an identity
    shortcut."""
    segments: list[tuple[str | None, list[int]]] = []
    for i, layer in enumerate(spec.layers):
        block = layer.residual_block
        if block is not None and segments and segments[-1][0] == block:
            segments[-1][1].append(i)
            continue
        if block is not None and any(b == block for b, _ in segments):
            raise InvalidInput(
                f"residual block {block!r} has weight layers that are not contiguous"
            )
        segments.append((block, [i]))
    for block, idx in segments:
        if block is None:
            continue
        prefix = f"{block}." if block else ""
        outside = [
            spec.layers[i].name
            for i in idx
            if not spec.layers[i].name.startswith(prefix)
            or spec.layers[i].name[len(prefix) :].split(".")[0] != "branch"
        ]
        if outside:
            raise InvalidInput(
                f"residual block {block!r} has weight layers outside its branch {outside} "
                "(a projection shortcut or a custom block); predict covers identity "
                "shortcuts y = x + λ·branch(x) (sigprop.nn.models.ResidualBlock)"
            )
        scales = {spec.layers[i].residual_scale for i in idx}
        if len(scales) != 1:
            raise InvalidInput(f"residual block {block!r} reports several scales {sorted(scales)}")
    return segments


def _predict_residual(spec: ModelSpec, q0: float, c0: float | None, density: bool) -> Prediction:
    """Mean-field predictions for a residual spec (see :func:`predict`).

    Forward: each plain layer maps the stream as in a chain; each block b with scale λ starts
    its branch from the stream y_{b−1} (Gaussian: a sum of weight-layer outputs), runs the
    branch's own layer-by-layer maps and adds: E[y_b²] = E[y_{b−1}²] + λ² E[branch²], and the
    same for the covariance (branch independent of the skip at init; Yang & Schoenholz 2017,
    arXiv 1712.08969, §3; Hayou et al. 2021, arXiv 2002.08797, §4). Backward: the squared
    gradient of every tensor is the sum over its consumers of (edge factor) × (consumer's
    squared gradient): σ_w² E[φ′²] through a layer, 1 through the skip, λ² into the branch —
    under the gradient-independence assumption (ibid.), with zero cross terms since every
    branch enters through zero-mean weights.
    """
    layers = spec.layers
    n = len(layers)
    graph = _Backward()
    s = _Stream(q0, None if c0 is None else q0 * c0, False, None, 0)  # inputs: not Gaussian
    q, second, out_var = np.zeros(n), np.zeros(n), np.zeros(n, dtype=int)
    c = np.zeros(n) if c0 is not None else None
    block_names, stream_q, stream_c, block_chi = [], [], [], []

    def run(i: int, stream: _Stream, where: str) -> _Stream:
        out, second[i], factor = _consume(layers[i], stream, graph, where)
        q[i] = out.m
        if c is not None:
            c[i] = 1.0 if out.m == 0 else out.k / out.m
        out_var[i] = out.var
        return out, factor

    for block, idx in _segments(spec):
        if block is None:
            s, _ = run(idx[0], s, f"layer {layers[idx[0]].name!r}")
            continue
        lam = float(layers[idx[0]].residual_scale)
        skip = _materialise(s, graph)
        branch, chi_branch = skip, 1.0
        for i in idx:
            branch, factor = run(i, branch, f"residual block {block!r}")
            chi_branch *= factor
        if branch.act is not None:
            # φ(h) has a nonzero mean for φ ≠ odd, so skip and branch would be correlated
            raise InvalidInput(
                f"residual block {block!r}: the branch ends in activation {branch.act}; the "
                "recursion needs the branch output to be a weight layer's output"
            )
        y = graph.node((skip.var, 1.0), (branch.var, lam**2))
        k = None if skip.k is None else skip.k + lam**2 * branch.k
        s = _Stream(skip.m + lam**2 * branch.m, k, skip.gaussian and branch.gaussian, None, y)
        block_names.append(block)
        stream_q.append(s.m)
        if c is not None:
            stream_c.append(1.0 if s.m == 0 else s.k / s.m)
        block_chi.append(1.0 + lam**2 * chi_branch)
    final = _materialise(s, graph)
    g = graph.sweep(final.var)
    g_out = g[out_var]
    if g_out[-1] == 0:
        raise InvalidInput("the predicted gradient of the last weight layer is zero")
    grad_ratio = g_out / g_out[-1]
    chi = np.empty(n)
    chi[0] = g[0] / g_out[0]
    chi[1:] = g_out[:-1] / g_out[1:]
    notes = [
        "residual mean field: branches independent of the skip at init, gradient "
        "independence backward (arXiv 1712.08969 §3, arXiv 2002.08797 §4)",
        "Jacobian spectrum not predicted for residual networks (no free-probability product "
        "form implemented for Π(I + λJ_b))",
    ]
    if density:
        notes.append("Jacobian density requested but not available for residual networks")
    return _prediction(
        spec,
        q=q,
        c=c,
        chi=chi,
        grad_ratio=grad_ratio,
        second=second,
        q0=q0,
        c0=c0,
        notes=tuple(notes),
        block_names=tuple(block_names),
        stream_q=np.array(stream_q),
        stream_c=np.array(stream_c) if c is not None else None,
        block_chi=np.array(block_chi),
    )
