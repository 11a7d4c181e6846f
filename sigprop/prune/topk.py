"""The exact top-k over several tensors ranked together, the core of
:func:`sigprop.prune.selection.select`: exactly ``k`` entries kept, ties to the smaller index
of the concatenation, the k-th largest found by selection (a strided sample brackets it on
large inputs), never by sorting."""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["topk_masks"]


def topk_masks(
    flats: list[torch.Tensor],
    k: int,
    eligible: list[torch.Tensor | None],
    use_numpy: bool | None = None,
) -> list[torch.Tensor]:
    """Boolean masks keeping exactly the ``k`` largest eligible entries of 1-D tensors.

    The tensors are ranked together as if concatenated; ties go to the smaller index of
    that concatenation. Only entries with ``eligible`` True (all where ``None``) can be
    kept; ``k`` must not exceed their number. The k-th largest value is found by selection,
    not sorting (O(N)), over the eligible entries only (so iterative pruning gets cheaper
    as it goes): ``numpy.partition`` for CPU tensors (about ten times faster than
    ``torch.kthvalue`` on CPU, measured for 10^6 entries) and ``torch.kthvalue`` elsewhere.
    Entries above it are kept; among entries equal to it, the ones with the smallest
    indices fill the remaining places. ``use_numpy`` forces a backend (tests); by default
    numpy is used when every tensor is on the CPU.
    """
    if use_numpy is None:
        use_numpy = all(f.device.type == "cpu" for f in flats)
    if use_numpy:
        arrs = []
        for f in flats:
            f = f.detach()
            if f.dtype not in (torch.float32, torch.float64):
                f = f.to(torch.float64)  # exact for integer, half and bfloat16 scores
            arrs.append(f.numpy())
        elig = [None if e is None else e.cpu().numpy() for e in eligible]
        backend = np
        count = np.count_nonzero
    else:
        arrs = [f.detach() for f in flats]
        elig = [None if e is None else e.to(a.device) for e, a in zip(eligible, arrs)]
        backend = None
        count = torch.count_nonzero
    size = (lambda a: a.size) if backend else (lambda a: a.numel())
    m = sum(size(a) if e is None else int(count(e)) for a, e in zip(arrs, elig))

    def full(a, e, value):
        if backend:
            return np.full(a.shape, value, dtype=bool) if e is None or not value else e.copy()
        if e is None or not value:
            return torch.full(a.shape, value, dtype=torch.bool, device=a.device)
        return e.clone()

    if k <= 0 or k >= m:
        keeps = [full(a, e, k > 0) for a, e in zip(arrs, elig)]
    else:
        thr, bands, one_value = _kth_largest(arrs, elig, k, m, backend)
        if bands is not None:
            return _from_bands(bands, thr, k, one_value)
        keeps = []
        for a, e in zip(arrs, elig):
            keep = a >= thr
            if e is not None:
                keep &= e
            keeps.append(keep)
        surplus = sum(int(count(kp)) for kp in keeps) - k
        for keep, a in zip(reversed(keeps), reversed(arrs)):  # drop the last tied entries
            if surplus <= 0:
                break
            tied = (
                np.flatnonzero(keep & (a == thr))
                if backend
                else torch.nonzero(keep & (a == thr)).squeeze(1)
            )
            n_tied = int(tied.size if backend else tied.numel())
            drop = min(surplus, n_tied)
            keep[tied[n_tied - drop :]] = False
            surplus -= drop
    return [torch.from_numpy(kp) if backend else kp for kp in keeps]


def _from_bands(bands, thr, k: int, one_value: bool) -> list[torch.Tensor]:
    """The top-k masks from :func:`_kth_largest`'s bracket, with no further pass over all
    entries. ``bands`` holds per layer the eligible entries above the bracket (a fresh
    boolean array, kept as is), those inside it (a boolean array for a one-value band, else
    their indices and values), their number and the number above.

    A one-value band (``one_value``: every entry in it equals ``thr``; the tie is the
    threshold, e.g. the zero scores of weights no input reaches, millions in a ResNet on
    32x32 inputs) is kept whole with one boolean OR per layer, and the surplus of ties is
    dropped from the end: whole layers' bands from the last layer backwards, then the last
    indices of one layer. A wider band is gathered by index (it is small: the sample's
    bracket) and its entries at or above ``thr`` are kept; ties at ``thr`` beyond ``k`` are
    dropped from the end."""
    keeps, ties, kept = [], [], 0
    for over, band, n, n_over in bands:
        if one_value:  # band: the boolean entries inside, all equal to thr
            keep = over | band if n else over
            ties.append((band, n))
            kept += n_over + n
        else:  # band: (indices inside, their values)
            idx, vals = band
            up = idx[vals >= thr]
            over[up] = True
            keep = over
            tied = idx[vals == thr]
            ties.append((tied, tied.size))
            kept += n_over + up.size
        keeps.append(keep)
    surplus = kept - k
    for i in reversed(range(len(keeps))):
        if surplus <= 0:
            break
        tied, n_tied = ties[i]
        if n_tied == 0:
            continue
        if one_value:
            if n_tied <= surplus:  # every tie of this layer goes: its entries above stay
                keeps[i] = bands[i][0]
                surplus -= n_tied
                continue
            tied = np.flatnonzero(tied)
        drop = min(surplus, n_tied)
        keeps[i][tied[n_tied - drop :]] = False
        surplus -= drop
    return [torch.from_numpy(kp) for kp in keeps]


#: below this many eligible entries the k-th largest is found by one partition of all of
#: them; above it a strided sample brackets it first (:func:`_kth_largest`)
_SMALL = 1 << 18
#: about this many entries in the sample that brackets the k-th largest
_SAMPLE = 1 << 16


def _odd_prime_at_least(n: int) -> int:
    n = max(3, n | 1)
    while any(n % p == 0 for p in range(3, math.isqrt(n) + 1, 2)):
        n += 2
    return n


def _kth_largest(arrs, elig, k: int, m: int, backend):
    """The k-th largest of the ``m`` eligible entries of ``arrs`` (1 ≤ k < m), exactly, and
    the bracket it was found in (``None`` when found by a full selection; else per layer
    the eligible entries above the bracket, those inside it and their number, as
    :func:`_from_bands` reads them), and whether that bracket is one tied value.

    Small inputs: one selection over the gathered eligible entries (``numpy.partition``, or
    ``torch.kthvalue`` off the CPU). Large ones (numpy only): a strided sample of the
    concatenation (a prime stride, so that it does not follow a layer's kernel or channel
    period) brackets the answer between two sample quantiles ``lo ≤ hi`` chosen six binomial
    standard deviations either side of the target rank; one pass finds the entries above
    ``hi`` and gathers those in [lo, hi] (comparing each entry once when most or few are
    kept, as in every round of iterative pruning), and a partition of that band gives the
    answer. If the bracket missed (a rare sample, or heavy ties) the full selection runs.
    Only the cost depends on the sample, never the result: selecting over
    11·10⁶ scores (ResNet-18) costs a few passes instead of a partition of all of them.
    """
    take = (lambda a, e: np.compress(e, a)) if backend else (lambda a, e: a[e])

    def exact():
        vals = [a if e is None else take(a, e) for a, e in zip(arrs, elig)]
        if backend:
            pooled = vals[0] if len(vals) == 1 else np.concatenate(vals)
            return np.partition(pooled, m - k)[m - k]
        pooled = torch.cat([v.to(torch.float64) for v in vals]) if len(vals) > 1 else vals[0]
        return torch.kthvalue(pooled, m - k + 1).values

    total = sum(a.size if backend else a.numel() for a in arrs)
    if not backend or m <= _SMALL:
        return exact(), None, False
    stride = _odd_prime_at_least(total // _SAMPLE)
    sample, offset = [], 0
    for a, e in zip(arrs, elig):
        start = (-offset) % stride
        part = a[start::stride]
        sample.append(part if e is None else np.compress(e[start::stride], part))
        offset += a.size
    s = np.concatenate(sample)
    n = s.size
    if n < 256:
        return exact(), None, False
    q = k / m
    pos = n * (1.0 - q)  # ascending index of the k-th largest in the sample
    delta = 6.0 * math.sqrt(n * q * (1.0 - q)) + 8.0
    i_lo, i_hi = math.floor(pos - delta), math.ceil(pos + delta)
    j_lo, j_hi = min(max(i_lo, 0), n - 1), min(max(i_hi, 0), n - 1)
    ends = np.partition(s, [j_lo, j_hi])  # one selection for both ends of the bracket
    lo = -np.inf if i_lo < 0 else ends[j_lo]
    hi = np.inf if i_hi >= n else ends[j_hi]
    if lo == hi:  # the band is one tied value (e.g. the zero scores of unused weights)
        bands = [_tied_band(a, e, lo) for a, e in zip(arrs, elig)]
    elif q >= _ONE_SIDED:
        bands = [_band_below(a, e, lo, hi) for a, e in zip(arrs, elig)]
    elif q <= 1.0 - _ONE_SIDED:
        bands = [_band_above(a, e, lo, hi) for a, e in zip(arrs, elig)]
    else:
        bands = [_band_between(a, e, lo, hi) for a, e in zip(arrs, elig)]
    need = k - sum(b[3] for b in bands)
    if not 1 <= need <= sum(b[2] for b in bands):
        return exact(), None, False
    if lo == hi:
        return lo, bands, True
    b = np.concatenate([vals for _, (_, vals), _, _ in bands])
    return np.partition(b, b.size - need)[b.size - need], bands, False


#: a top-k that keeps at least this fraction of the eligible entries (or at most one minus
#: it) compares every entry once, with the bracket's far end, and sorts out the few on the
#: near side by index (:func:`_band_below`, :func:`_band_above`); in between, two
#: comparisons per entry (:func:`_band_between`) are cheaper than gathering many indices
_ONE_SIDED = 0.85


def _tied_band(a, e, v):
    """A band of one value ``v``: ``(over, band, n_band, n_over)``, the eligible entries
    above ``v`` and those equal to it as boolean arrays, and their numbers."""
    over = np.greater(a, v)
    band = np.equal(a, v)
    if e is not None:
        over &= e
        band &= e
    return over, band, int(np.count_nonzero(band)), int(np.count_nonzero(over))


def _band_between(a, e, lo, hi):
    """Two comparisons per entry: ``(over, (idx, vals), n_band, n_over)``, the eligible
    entries above ``hi`` as a boolean array, the indices and values of those in [lo, hi],
    and their numbers."""
    over = np.greater(a, hi)
    inside = np.greater_equal(a, lo)
    inside ^= over  # lo <= a <= hi (over is a subset of inside's >= lo)
    if e is not None:
        over &= e
        inside &= e
    idx = np.flatnonzero(inside)
    return over, (idx, a[idx]), idx.size, int(np.count_nonzero(over))


def _band_below(a, e, lo, hi):
    """As :func:`_band_between` with one comparison per entry, for a top-k that keeps most
    entries: those not above ``hi`` are few, and are gathered and sorted by value."""
    over = np.greater(a, hi)
    rest = np.logical_not(over) if e is None else np.greater(e, over)  # eligible, <= hi
    if e is not None:
        over &= e
    cand = np.flatnonzero(rest)
    vals = a[cand]
    inside = vals >= lo
    return (
        over,
        (cand[inside], vals[inside]),
        int(np.count_nonzero(inside)),
        int(np.count_nonzero(over)),
    )


def _band_above(a, e, lo, hi):
    """As :func:`_band_between` with one comparison per entry, for a top-k that keeps few
    entries: those at or above ``lo`` are gathered and sorted by value."""
    cand = np.greater_equal(a, lo)
    if e is not None:
        cand &= e
    cand = np.flatnonzero(cand)
    vals = a[cand]
    top = vals > hi
    over = np.zeros(a.shape, dtype=bool)
    over[cand[top]] = True
    inside = ~top
    return (
        over,
        (cand[inside], vals[inside]),
        int(np.count_nonzero(inside)),
        int(np.count_nonzero(top)),
    )
