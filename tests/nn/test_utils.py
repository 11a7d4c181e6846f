"""sigprop.nn.utils: the one rule for reading data arguments as (inputs, targets) batches,
and the float64 sum of squares."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DataLoader, TensorDataset

from sigprop.diagnostics import gradient_flow
from sigprop.nn import MaskedLinear
from sigprop.nn.utils import as_batches, sum_sq
from sigprop.prune import snip_scores


def _xy(n=6):
    return torch.randn(n, 3, generator=torch.Generator().manual_seed(0)), torch.arange(n) % 2


def test_a_tuple_is_one_batch_a_list_is_a_sequence():
    x, y = _xy()
    assert [tuple(b) for b in as_batches((x, y))] == [(x, y)]
    # a list of two tensors is two unlabelled batches (targets optional) ...
    x2 = x[:2]
    got = list(as_batches([x, x2], targets_required=False))
    assert [b[0] is t for b, t in zip(got, [x, x2])] == [True, True]
    assert all(b[1] is None for b in got)
    # ... and an error where targets are required, never inputs and targets
    with pytest.raises(ValueError, match="pair"):
        list(as_batches([x, y], method="snip"))


def test_dataloader_lists_and_reiteration():
    x, y = _xy(8)
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    data = as_batches(loader)
    first, second = list(data), list(data)  # a DataLoader can be read twice
    assert len(first) == len(second) == 2 and not data.one_shot
    assert torch.equal(torch.cat([b[0] for b in first]), x)
    assert as_batches(data) is data
    one_tensor = DataLoader(TensorDataset(x), batch_size=4)  # yields [inputs]
    assert [b[1] for b in as_batches(one_tensor, targets_required=False)] == [None, None]
    assert as_batches(iter([(x, y)])).one_shot


@pytest.mark.parametrize("bad", [None, "xy", 3, torch.zeros(2, 3)])
def test_bad_data_is_rejected(bad):
    with pytest.raises(ValueError, match="snip"):
        list(as_batches(bad, method="snip"))


def test_mismatched_lengths_are_rejected():
    x, y = _xy()
    with pytest.raises(ValueError, match="same number of samples"):
        as_batches((x, y[:3]))
    with pytest.raises(ValueError, match="same number of samples"):
        list(as_batches([(x, y[:3])]))


def test_prune_and_diagnostics_read_data_alike():
    # the same list [(x, y)] is one labelled batch for both snip and gradient_flow, and a
    # bare list [x, y] is refused by snip and read as two unlabelled batches by gradient_flow
    x, y = _xy()
    model = torch.nn.Sequential(MaskedLinear(3, 4), torch.nn.Tanh(), MaskedLinear(4, 2))
    one = snip_scores(model, (x, y))
    listed = snip_scores(model, [(x, y)])
    # identical computation on identical data: exact equality
    assert all(torch.equal(one[k], listed[k]) for k in one)
    with pytest.raises(ValueError, match="pair"):
        snip_scores(model, [x, y.double()[:, None].expand(-1, 3)])
    flow = gradient_flow(model, [(x, y)], progress=False)
    assert flow.loss == "cross_entropy" and flow.n_batches == 1
    flow = gradient_flow(model, [x, x], progress=False)
    assert flow.loss == "random_projection" and flow.n_batches == 2


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(0, 3 * (1 << 16) + 5),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16]),
    seed=st.integers(0, 2**16),
)
def test_sum_sq_is_the_float64_sum_of_squares(n, dtype, seed):
    # the chunked float64 sum equals the one-shot float64 sum up to summation order
    t = torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(dtype)
    exact = float(t.double().pow(2).sum())
    assert sum_sq(t) == pytest.approx(exact, rel=1e-13, abs=0.0)
    assert sum_sq(t.reshape(1, -1).expand(2, -1)) == pytest.approx(2 * exact, rel=1e-13)


def test_sum_sq_of_a_non_finite_tensor_is_not_finite():
    big = torch.zeros(1 << 17)
    assert sum_sq(big) == 0.0
    big[-1] = float("inf")
    assert sum_sq(big) == float("inf")
    big[3] = float("nan")
    assert math.isnan(sum_sq(big))
