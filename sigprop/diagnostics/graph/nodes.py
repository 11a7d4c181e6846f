"""Per-module records: the engine's prediction and the hooks' measurement, by module name.

Both sides give, per module qualified name (as in ``model.named_modules()``), a dict with

* ``q``: mean over batch, channels and positions of the output's square;
* ``mean``: the mean of the output;
* ``correlation``: Σ x_a x_b / Σ (x_a² + x_b²)/2 over channels and positions for the input
  pairs (0, 1), (2, 3), … (the engine: Σ_c E[x_a x_b] / Σ_c E[x²]); ``None`` without a pair;
* ``avg_sq_ch_mean`` and ``avg_ch_var``: Brock et al. 2021 (arXiv 2101.08692, §3; timm's
  ``avg_sq_ch_mean`` = mean_c (mean over batch × space of x_c)², ``avg_ch_var`` = mean_c of
  the unbiased variance over batch × space);
* ``weight_grad`` for weight layers: ‖∇_W L ⊙ M‖²/B for the random readout
  L = Σ_b r_b · y_b, r iid N(0, 1) at every output element (the engine's backward convention,
  README "weight_grad"), and ``weight_grad_ratio``: the same over the last weight layer's;
* predicted only: ``g`` (E[δ²] per output element), ``node`` and ``op`` (the engine node).

Channels are the torch axis 1 of a (B, C, *S) tensor and the last axis of a token tensor
(B, T, D) (the translation's layout).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from sigprop.diagnostics.graph.translate import Translation
from sigprop.nn.utils import sum_sq

__all__ = ["measure_nodes", "predicted_nodes"]


def _ratio(records: dict, weights) -> None:
    names = [n for n in weights if records.get(n, {}).get("weight_grad") is not None]
    if not names:
        return
    last = records[names[-1]]["weight_grad"]
    for n in names:
        wg = records[n]["weight_grad"]
        records[n]["weight_grad_ratio"] = wg / last if last else math.nan


def predicted_nodes(tr: Translation, result) -> tuple[dict, tuple[str, ...]]:
    """(records by module name, module names the engine did not reach)."""
    records, unreached = {}, []
    for mname, tn in tr.node_of.items():
        res = result.nodes.get(tn)
        if res is None:
            unreached.append(mname)
            continue
        f = res.forward
        rec = {
            "node": tn,
            "op": res.op,
            "q": float(f["q_mean"]),
            "mean": float(f["mean_mean"]),
            "correlation": None if f.get("correlation") is None else float(f["correlation"]),
            "avg_sq_ch_mean": float(f["avg_sq_ch_mean"]),
            "avg_ch_var": float(f["avg_ch_var"]),
            "g": None if res.backward is None else float(res.backward["g_mean"]),
            "weight_grad": None,
        }
        ref = tr.weights.get(mname)
        if ref is not None and res.weight_grad is not None:
            wg = res.weight_grad
            rec["weight_grad"] = float(wg[ref.key] if ref.key else wg)
        records[mname] = rec
    for mname, ref in tr.weights.items():  # attention parts without an output of their own
        if mname in records and records[mname]["weight_grad"] is None:
            res = result.nodes.get(ref.node)
            if res is not None and isinstance(res.weight_grad, dict):
                records[mname]["weight_grad"] = float(res.weight_grad[ref.key])
    _ratio(records, tr.weights)
    return records, tuple(unreached)


def _stats(y: torch.Tensor, tok: bool) -> dict:
    """Brock et al.'s statistics from per-sample, per-channel sums: in the activation's
    precision over the positions of one channel of one sample (at most H·W terms), then in
    float64 over samples and channels. The squares are Euclidean norms (one reduction, no
    temporary of the activation's size; float32's relative error ≈ 1e-7 against a float64
    sum); the pair products of samples 2i and 2i+1 come from the polarisation identity
    a·b = (‖a + b‖² − ‖a‖² − ‖b‖²)/2 (one temporary of half the activation's size), whose
    rounding error is ≈ 1e-7 of ‖a‖² + ‖b‖², i.e. an error of ≈ 1e-7 on the correlation,
    far below the finite-size noise of a batch. No float64 copy of the activation is made."""
    y = y.detach()
    n = y.shape[0]
    if tok and y.ndim >= 3:
        y = y.movedim(-1, 1)
    flat = y.reshape(n, y.shape[1] if y.ndim > 1 else 1, -1)
    count = flat.shape[0] * flat.shape[2]  # samples × positions per channel
    s1 = flat.sum(dim=2).double().sum(dim=0)
    sq = _squares(flat)  # (samples, channels), float64
    s2 = sq.sum(dim=0)
    ch_mean = s1 / count
    rec = {
        "q": float(s2.sum()) / (count * s2.numel()),
        "mean": float(s1.sum()) / (count * s1.numel()),
        "avg_sq_ch_mean": float(ch_mean.pow(2).mean()),
        # unbiased variance over batch × space, as torch's var
        "avg_ch_var": float(((s2 - s1 * ch_mean) / (count - 1)).mean()) if count > 1 else math.nan,
        "correlation": None,
    }
    pairs = n // 2
    if pairs:
        a, b = flat[0 : 2 * pairs : 2], flat[1 : 2 * pairs : 2]
        sa, sb = sq[0 : 2 * pairs : 2], sq[1 : 2 * pairs : 2]
        den = 0.5 * float((sa + sb).sum())
        ab = 0.5 * float((_squares(a + b) - sa - sb).sum())
        rec["correlation"] = ab / den if den > 0 else math.nan
    return rec


def _squares(flat: torch.Tensor) -> torch.Tensor:
    """Σ_p x[n, c, p]² per sample and channel, in float64 (from the norm in ``flat``'s
    precision)."""
    return torch.linalg.vector_norm(flat, dim=2).double().square()


def measure_nodes(
    model: nn.Module, tr: Translation, x: torch.Tensor, *, n_probes: int = 1, seed: int = 0
) -> dict:
    """Measured records (module doc) of ``model`` on the batch ``x`` (its current mode;
    BatchNorm running statistics are restored afterwards)."""
    modules = dict(model.named_modules())
    records: dict[str, dict] = {}
    handles = []

    def hook(name: str, tok: bool):
        def fn(module, args, output):
            y = output[0] if isinstance(output, (tuple, list)) else output
            if isinstance(y, torch.Tensor) and y.is_floating_point() and y.ndim >= 1:
                records[name] = _stats(y, tok)  # the last call wins (as module_outputs)

        return fn

    for name, tn in tr.node_of.items():
        m = modules.get(name)
        if m is None or tr.layout.get(tn) is None:
            continue
        handles.append(m.register_forward_hook(hook(name, tr.layout[tn] == "tok")))
    saved = {k: v.detach().clone() for k, v in model.named_buffers()}
    gen = torch.Generator(device="cpu").manual_seed(seed)
    try:
        with torch.enable_grad():
            out = model(x)
            out = out[0] if isinstance(out, (tuple, list)) else out
            refs = [r for r in tr.weights.values() if r.module in modules]
            tensors = [getattr(modules[r.module], r.attr) for r in refs]
            keep = [i for i, t in enumerate(tensors) if t.requires_grad]
            sums = np.zeros(len(refs))
            for p in range(n_probes):
                r = torch.randn(out.shape, generator=gen, dtype=out.dtype).to(out.device)
                grads = torch.autograd.grad(
                    (r * out).sum(),
                    [tensors[i] for i in keep],
                    retain_graph=p + 1 < n_probes,
                    allow_unused=True,
                )
                for i, g in zip(keep, grads):
                    if g is None:
                        continue
                    mask = refs[i].mask
                    g = g if mask is None else g * mask
                    sums[i] += sum_sq(g) / x.shape[0]
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for k, v in model.named_buffers():
                if k in saved:
                    v.copy_(saved[k])
    for i, ref in enumerate(refs):
        if ref.module in records:
            records[ref.module]["weight_grad"] = sums[i] / n_probes if i in keep else None
        elif i in keep:  # a part that runs inside its parent (attention's out_proj)
            parent = next(
                (records[m] for m, tn in tr.node_of.items() if tn == ref.node and m in records),
                None,
            )
            if parent is not None:
                records[ref.module] = {**parent, "weight_grad": sums[i] / n_probes}
    _ratio(records, tr.weights)
    return records
