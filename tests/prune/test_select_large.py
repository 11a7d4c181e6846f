"""The sampled bracket of the exact top-k (above 2^18 eligible entries) against torch's
full selection: identical masks, with ties, eligibility and a bracket that misses."""

import pytest
import torch

from sigprop.prune import topk as TK


def _case(seed, ties):
    g = torch.Generator().manual_seed(seed)
    sizes = [int(s) for s in torch.randint(50_000, 250_000, (4,), generator=g)]
    if ties:  # few distinct values: large tied bands at the threshold
        flats = [torch.randint(0, 40, (s,), generator=g).float() for s in sizes]
    else:  # signed, in float64 and float32
        flats = [torch.randn(s, generator=g, dtype=torch.float64) for s in sizes]
        flats[1] = flats[1].float()
    elig = [None if i % 2 else torch.rand(s, generator=g) < 0.7 for i, s in enumerate(sizes)]
    m = sum(s if e is None else int(e.sum()) for s, e in zip(sizes, elig))
    return flats, elig, m, g


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("ties", [False, True])
def test_sampled_bracket_matches_full_selection(seed, ties):
    flats, elig, m, g = _case(seed, ties)
    assert m > TK._SMALL  # the sampled path runs
    # k/m below 0.15, between, and above 0.85 (every round of SynFlow's schedule keeps
    # about 0.977 of the eligible weights): the three ways of reading the bracket
    for k in (
        1,
        m // 50,
        int(torch.randint(2, m - 1, (1,), generator=g)),
        m // 2,
        m - m // 40,
        m - 1,
    ):
        a = TK.topk_masks(flats, k, elig, use_numpy=True)
        b = TK.topk_masks(flats, k, elig, use_numpy=False)
        assert sum(int(x.sum()) for x in a) == k
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_a_missed_bracket_falls_back(monkeypatch):
    flats, elig, m, _ = _case(0, False)
    k = m // 3
    ref = TK.topk_masks(flats, k, elig, use_numpy=False)
    # a bracket of zero width around a wrong rank cannot hold the answer: full selection
    monkeypatch.setattr(TK.math, "sqrt", lambda x: -1e9)
    got = TK.topk_masks(flats, k, elig, use_numpy=True)
    for x, y in zip(got, ref):
        assert torch.equal(x, y)
