"""The watch log: the bounded reader under fuzzing, round trips, bounds, TensorBoard events."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from sigprop.validate import InvalidInput
from sigprop.watcher import QUANTITIES, read_log, watch
from sigprop.watcher.log import LogWriter


def _write(tmp_path, data: bytes):
    path = tmp_path / "sigprop.jsonl"
    path.write_bytes(data)
    return path


@given(data=st.binary(max_size=400))
def test_arbitrary_bytes_are_read_or_refused(tmp_path_factory, data):
    path = _write(tmp_path_factory.mktemp("fuzz"), data)
    try:
        log = read_log(path)
    except InvalidInput as exc:
        assert "\n" not in str(exc)
    else:
        assert len(log.steps) >= 1 and all(
            v.shape[0] == len(log.steps) for v in log.values.values()
        )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["step", "layers", "q", "density", "grad_norm", "x"]),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@given(records=st.lists(_json, min_size=1, max_size=4))
def test_arbitrary_json_lines_are_read_or_refused(tmp_path_factory, records):
    text = "".join(json.dumps(r) + "\n" for r in records)
    path = _write(tmp_path_factory.mktemp("fuzzjson"), text.encode())
    try:
        read_log(path)
    except InvalidInput as exc:
        assert "\n" not in str(exc)


_value = st.none() | st.floats(allow_nan=False, allow_infinity=False, width=64)
_layer = st.fixed_dictionaries({q: _value for q in QUANTITIES})
_record = st.fixed_dictionaries(
    {
        "step": st.integers(0, 10**6),
        "layers": st.dictionaries(
            st.sampled_from(["0", "a.b", "layer 3", "é"]), _layer, max_size=4
        ),
    }
)


@given(records=st.lists(_record, min_size=1, max_size=8))
def test_written_records_read_back_exactly(tmp_path_factory, records):
    folder = tmp_path_factory.mktemp("round")
    writer = LogWriter(folder / "sigprop.jsonl")
    for r in records:
        writer.write(r)
    writer.close()
    log = read_log(folder)
    latest = {r["step"]: r for r in records}  # a step written twice keeps its latest record
    assert list(log.steps) == sorted(latest)
    for i, step in enumerate(log.steps):
        for j, name in enumerate(log.layers):
            for q in QUANTITIES:
                want = latest[step]["layers"].get(name, {}).get(q)
                got = log.values[q][i, j]
                assert (math.isnan(got) and want is None) or got == want


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b'{"step": NaN, "layers": {}}\n', "not a JSON number"),
        (b'{"step": 1, "layers": {"0": {"q": Infinity}}}\n', "not a JSON number"),
        (b'{"step": 1, "layers": {"0": {"q": 1e999}}}\n', "not finite"),
        (b'{"step": true, "layers": {}}\n', "step"),
        (b'{"step": -1, "layers": {}}\n', "step"),
        (b'{"step": 1.5, "layers": {}}\n', "step"),
        (b'{"step": 1, "layers": []}\n', "layers"),
        (b'{"step": 1, "layers": {"0": 3}}\n', "must be an object"),
        (b'{"step": 1, "layers": {"0": {"q": "1"}}}\n', "number"),
        (b'{"step": 1, "layers": {}, "collapse": {"connected": 1}}\n', "connected"),
        (b'{"step": 1, "layers": {}, "collapse": {"collapsed_layers": [1]}}\n', "names"),
        (b'{"step": 1, "layers": {}, "predicted": {"0": {"q": "x"}}}\n', "number"),
        (b"[1, 2]\n", "not a JSON object"),
        (b"\xff\xfe\n", "UTF-8"),
        (b"{not json}\n", "not JSON"),
        (b"\n", "empty"),
        (b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
        (b'{"step": ' + b"9" * 5000 + b', "layers": {}}\n', "line 1"),
        (b'{"step": 1, "layers"', "no complete record"),
        (b"", "no complete record"),
    ],
)
def test_malformed_logs_are_refused_in_one_line(tmp_path, content, match):
    _write(tmp_path, content)
    with pytest.raises(InvalidInput, match=match) as info:
        read_log(tmp_path)
    assert "\n" not in str(info.value)


def test_bounds(tmp_path):
    line = {"step": 0, "layers": {f"l{i}": {"q": 1.0} for i in range(5)}}
    rows = [json.dumps({**line, "step": s}) for s in range(20)]
    _write(tmp_path, ("\n".join(rows) + "\n").encode())
    assert len(read_log(tmp_path).steps) == 20
    for kwargs, match in [
        ({"max_records": 19}, "more than 19 records"),
        ({"max_layers": 4}, "more than 4 layers"),
        ({"max_cells": 99}, "more than 99 values"),
        ({"max_line_bytes": 50}, "longer than 50 bytes"),
        ({"max_records": 0}, "max_records"),
    ]:
        with pytest.raises(InvalidInput, match=match):
            read_log(tmp_path, **kwargs)
    with pytest.raises(InvalidInput, match="no such log"):
        read_log(tmp_path / "missing")


def test_a_log_whose_last_line_is_not_a_record_cannot_be_resumed(tmp_path):
    _write(tmp_path, b'{"step": 1, "layers": {}}\n{"oops": 1}\n')
    model = nn.Linear(2, 2)
    with pytest.raises(InvalidInput, match="last line"):
        watch(model, tmp_path, tensorboard=False)


def test_tensorboard_events_carry_the_same_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from sigprop.nn import MaskedLinear

    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(MaskedLinear(6, 8, density=0.5, generator=g), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 2, (16,), generator=g)
    with watch(model, tmp_path, every=2, tensorboard=True, histogram_every=2) as w:
        for step in range(1, 7):
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            w.step()
            if step == 4:
                kept = model[0].weight.detach()[model[0].weight_mask != 0].double()
    log = read_log(tmp_path)
    acc = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    for j, name in enumerate(log.layers):
        for q in QUANTITIES:
            events = acc.Scalars(f"{q}/{name}")
            measured = log.values[q][:, j]
            steps = log.steps[~np.isnan(measured)]
            assert [e.step for e in events] == list(steps)
            # TensorBoard stores float32: the log's value rounded to float32
            assert [e.value for e in events] == [
                float(np.float32(v)) for v in measured[~np.isnan(measured)]
            ]
        # every second record (steps 0 and 4); no gradient at step 0
        assert [h.step for h in acc.Histograms(f"weights/{name}")] == [0, 4]
        assert [h.step for h in acc.Histograms(f"grads/{name}")] == [4]
    assert [e.step for e in acc.Scalars("model/effective_density")] == [0]
    hist = acc.Histograms("weights/0")[-1].histogram_value
    assert hist.num == int(model[0].weight_mask.sum())  # kept weights only
    assert (hist.min, hist.max) == (float(kept.min()), float(kept.max()))
    assert hist.sum == pytest.approx(float(kept.sum()), rel=1e-12, abs=1e-12)
    assert hist.sum_squares == pytest.approx(float(kept.square().sum()), rel=1e-12)
    assert sum(hist.bucket) == hist.num and len(hist.bucket) == 64


@given(
    n=st.integers(1, 2000),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([1e-8, 1.0, 1e6]),
)
def test_histogram_stats_agree_with_numpy(n, seed, scale):
    from sigprop.watcher.tensorboard import HISTOGRAM_BINS, histogram_stats

    x = np.random.default_rng(seed).standard_normal(n) * scale
    s = histogram_stats(torch.as_tensor(x)).tolist()
    lo, hi, num, total, total_sq, counts = s[0], s[1], s[2], s[3], s[4], s[5:]
    assert (lo, hi, num) == (x.min(), x.max(), n)
    assert total == pytest.approx(x.sum(), rel=1e-12, abs=1e-12 * scale * n)
    assert total_sq == pytest.approx(np.square(x).sum(), rel=1e-12)
    if hi > lo:
        expected, _ = np.histogram(x, bins=HISTOGRAM_BINS, range=(lo, hi))
        assert counts == expected.tolist()
    else:
        assert counts[0] == n and sum(counts) == n
