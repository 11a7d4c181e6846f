"""How coherently the SNIP gradient adds up over a batch: mean-field pair correlations
(same and different class) and the batch-coherence factor of the score variance."""

from __future__ import annotations

from typing import Any

import numpy as np

from sigprop.validate import InvalidInput


def class_cosines(inputs: Any, labels: Any) -> tuple[float, float]:
    """(mean cosine of two inputs of the same class, of different classes) over a batch.

    ``inputs`` (B, ...) and integer ``labels`` (B,); inputs that are all zeros (no
    direction) are left out. With no same-class pair (one example per class) the first value
    is the second (it then carries no weight in :func:`snip_batch_coherence`).
    """
    x = np.asarray(inputs, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if x.ndim < 2 or x.shape[0] != y.size:
        raise InvalidInput(f"inputs (B, ...) and labels (B,) must agree, got {x.shape}, {y.shape}")
    x = x.reshape(x.shape[0], -1)
    norms = np.linalg.norm(x, axis=1)
    keep = norms > 0
    if not np.all(np.isfinite(x)):
        raise InvalidInput("inputs contain NaN or inf")
    if int(keep.sum()) < 2:
        raise InvalidInput("class_cosines needs at least two inputs that are not all zeros")
    unit, y = x[keep] / norms[keep, None], y[keep]
    cos = unit @ unit.T
    same = y[:, None] == y[None, :]
    off = ~np.eye(y.size, dtype=bool)
    if not np.any(~same):
        raise InvalidInput("class_cosines needs examples of at least two classes")
    c_diff = float(cos[~same].mean())
    c_same = float(cos[same & off].mean()) if np.any(same & off) else c_diff
    return float(np.clip(c_same, -1.0, 1.0)), float(np.clip(c_diff, -1.0, 1.0))


def snip_batch_coherence(
    activation: Any,
    q: Any,
    c_same: Any,
    c_diff: Any,
    input_corr: tuple[float, float],
    *,
    labels: Any,
    classes: int,
) -> np.ndarray:
    """ρ_l: how coherently a batch adds up in the SNIP gradient of layer l.

    Model (derived here, for :func:`snip_score_scales`; the kernels are those of Poole et al.
    arXiv 1606.05340 eq. 5 and Schoenholz et al. arXiv 1611.01232 §4). The gradient of W^l
    is Σ_b δ^l_b x^{l−1}_bᵀ; with forward and backward signals independent (mean field),

        ρ_l = mean over pairs b ≠ b' of [E x_b x_b' / E x²] · [E δ_b δ_b' / E δ²],

    evaluated for the two kinds of pairs of the batch: same class (a fraction
    Σ_k m_k(m_k − 1)/(B(B − 1)) of the pairs, m_k examples of class k among B) and different
    classes, each with its own forward correlations.

    * Forward: the input to layer 1 has the data's mean cosine within / across classes
      (``input_corr``, :func:`class_cosines`); the input to layer l ≥ 2 has
      E φ(u)φ(u')/E φ(u)² at the pre-activation variance q^{l−1} and correlation c^{l−1} of
      that kind of pair.
    * Output: cross entropy of softmax(z) over ``classes`` = K logits of i.i.d. coordinates of
      variance q^L, linearised around the uniform distribution: per example
      δ = u − e_y + P z/K (P the centring projector), so E‖δ‖² = (K−1)/K·(1 + q^L/K) and
      E δ_b·δ_b' = [y_b = y_b'] − 1/K + (K−1)/K² q^L c^L_{bb'}. Exact as q^L → 0; against
      Monte Carlo the different-class correlation is off by 0.002 at q^L = 1 and by 0.03 at
      q^L = 4 (K = 10).
    * Backward: E δ^l_b δ^l_b' / E (δ^l)² = that of layer l + 1 times
      E φ′(u)φ′(u')/E φ′(u)² at (q^l, c^l) (the gradient-kernel recursion).

    Parameters
    ----------
    activation : activation spec, or a list of L − 1 specs (the nonlinearity after layers
        1 … L − 1; ``None`` for none; the last layer gives the logits).
    q : array (L,) pre-activation variances q^1 … q^L.
    c_same, c_diff : arrays (L,) pre-activation correlations c^l of two inputs of the same
        class / of different classes (``sigprop.diagnostics.predict`` with that c0).
    input_corr : (c_same⁰, c_diff⁰), the data's mean cosine within / across classes.
    labels : the batch's integer labels (B ≥ 2), in [0, classes).
    classes : K ≥ 2, the number of logits.

    Returns
    -------
    ndarray (L,): ρ_1 … ρ_L.
    """
    from sigprop.theory import meanfield

    q = np.atleast_1d(np.asarray(q, dtype=np.float64))
    cs = np.atleast_1d(np.asarray(c_same, dtype=np.float64))
    cd = np.atleast_1d(np.asarray(c_diff, dtype=np.float64))
    c0 = np.asarray(input_corr, dtype=np.float64)
    n = q.size
    if cs.shape != (n,) or cd.shape != (n,) or n < 1:
        raise InvalidInput(
            f"q, c_same and c_diff must be 1-D of one length, got {q.shape}, {cs.shape}, {cd.shape}"
        )
    if not (np.all(np.isfinite(q)) and np.all(q > 0)):
        raise InvalidInput("q must be finite and > 0")
    if c0.shape != (2,):
        raise InvalidInput(f"input_corr must be (c_same, c_diff), got shape {c0.shape}")
    for name, c in (("c_same", cs), ("c_diff", cd), ("input_corr", c0)):
        if not (np.all(np.isfinite(c)) and np.all(np.abs(c) <= 1)):
            raise InvalidInput(f"{name} must be correlations in [−1, 1]")
    if isinstance(classes, bool) or int(classes) != classes or classes < 2:
        raise InvalidInput(f"classes must be an integer ≥ 2, got {classes!r}")
    k = int(classes)
    y = np.asarray(labels).reshape(-1)
    if y.size < 2 or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= k:
        raise InvalidInput(f"labels must be ≥ 2 integers in [0, {k}), got {labels!r}")
    acts = list(activation) if isinstance(activation, (list, tuple)) else [activation] * (n - 1)
    if len(acts) != n - 1:
        raise InvalidInput(f"activation: one spec or a list of {n - 1} (layers 1 … L − 1)")
    acts = ["linear" if a is None else a for a in acts]
    batch = y.size
    counts = np.bincount(y, minlength=k).astype(np.float64)
    f_same = float(np.sum(counts * (counts - 1.0))) / (batch * (batch - 1.0))
    # forward correlations of the input to each layer, per kind of pair
    fwd = np.empty((2, n))
    fwd[:, 0] = c0
    back = np.ones((2, n))  # E φ′φ′ / E φ′² at layer l (1 for the logits)
    for i, act in enumerate(acts):
        kern, dkern = meanfield.kernel(act, np.full(3, q[i]), np.array([cs[i], cd[i], 1.0]))
        fwd[:, i + 1] = kern[:2] / kern[2]
        back[:, i] = dkern[:2] / dkern[2]
    q_l = q[-1]
    norm = (k - 1) / k * (1.0 + q_l / k)
    out_same = ((k - 1) / k + (k - 1) / k**2 * q_l * cs[-1]) / norm
    out_diff = (-1.0 / k + (k - 1) / k**2 * q_l * cd[-1]) / norm
    # backward: the correlation at layer l is the output's times the kernels of l … L − 1
    tail = np.cumprod(back[:, ::-1], axis=1)[:, ::-1]  # Π_{j ≥ l} back_j
    dcorr = np.stack([out_same * tail[0], out_diff * tail[1]])
    return f_same * fwd[0] * dcorr[0] + (1.0 - f_same) * fwd[1] * dcorr[1]
