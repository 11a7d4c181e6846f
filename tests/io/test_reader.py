"""sigprop's own readers against torch's: the same tensors, the same graphs, the same shapes.

* hypothesis-generated state dicts (views with offsets and transposes, tied tensors, every
  supported dtype; zip or legacy; stored, deflated, or written big-endian) read by
  ``load_checkpoint`` equal what ``torch.load(weights_only=True)`` returns, value for value;
* the graph read from a ``.pt2``'s JSON gives the collapse report ``torch.export.load``'s
  program gives;
* every ``expr_str`` torch writes (real dynamic-shape exports, and hypothesis-generated
  sympy expressions over the same functions) passes the expression grammar, and no text
  makes the grammar check raise anything but its refusal.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
import zipfile

import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from hypothesis import assume, given
from torch import nn

from sigprop.diagnostics.collapse import check_collapse
from sigprop.io import load_checkpoint
from sigprop.io.symexpr import ExprRefused, check_expr
from tests.security.checkpoint_files import S, T, be, torch_zip

DTYPES = [
    torch.float32,
    torch.float64,
    torch.float16,
    torch.bfloat16,
    torch.float8_e4m3fn,
    torch.int64,
    torch.int16,
    torch.uint8,
    torch.bool,
    torch.uint16,
]


@st.composite
def state_dicts(draw):
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    sd = {"fc.weight": torch.randn(3, 2, generator=g)}  # a layer, so the file is a checkpoint
    for i in range(draw(st.integers(1, 4))):
        dtype = draw(st.sampled_from(DTYPES))
        rows, cols = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        base = torch.randn(rows + 2, cols + 3, generator=g) * 3
        base = base.to(dtype) if dtype != torch.bool else base > 0
        view = draw(st.sampled_from(["plain", "transpose", "slice", "row"]))
        t = {"plain": base, "transpose": base.t(), "slice": base[1:, 2:], "row": base[1]}[view]
        sd[f"t{i}"] = t
        if draw(st.booleans()):
            sd[f"t{i}.tied"] = t  # the same tensor under a second key
    return sd


def _rewrite_deflated(path):
    with zipfile.ZipFile(path) as zin:
        items = [(i.filename, zin.read(i.filename)) for i in zin.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zout:
        for name, data in items:
            zout.writestr(name, data)


@given(state_dicts(), st.sampled_from(["zip", "legacy", "deflated"]))
def test_tensors_equal_torch_load(tmp_path_factory, sd, how):
    # torch's legacy format has no storage class for these (torch.load itself fails)
    legacy_less = (torch.float8_e4m3fn, torch.uint16)
    assume(how != "legacy" or not any(t.dtype in legacy_less for t in sd.values()))
    path = tmp_path_factory.mktemp("diff") / "m.pt"
    torch.save(sd, path, _use_new_zipfile_serialization=how != "legacy")
    if how == "deflated":
        _rewrite_deflated(path)
    reference = torch.load(path, weights_only=True)
    ckpt = load_checkpoint(path, validate_values=False)
    assert list(ckpt.tensors) == list(reference)
    for key, value in reference.items():
        lazy = ckpt.tensors[key]
        assert lazy.shape == tuple(value.shape) and lazy.dtype == value.dtype
        assert torch.equal(lazy.load().view(torch.uint8), value.contiguous().view(torch.uint8))
        if value.dim():
            rows = torch.cat(list(lazy.iter_rows(2)))
            assert torch.equal(rows.view(torch.uint8), value.contiguous().view(torch.uint8))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    )


@given(state_dicts(), st.sampled_from(["zip", "legacy", "deflated", "safetensors"]))
def test_numpy_blocks_equal_torch_blocks(tmp_path_factory, sd, how):
    # load_array/iter_arrays read the same bytes as load/iter_rows without torch: views with
    # offsets and transposes, compressed entries; bfloat16 and float8 widened to float32
    from safetensors.torch import save_file

    from sigprop.io.lazy import to_numpy

    legacy_less = (torch.float8_e4m3fn, torch.uint16)
    assume(how != "legacy" or not any(t.dtype in legacy_less for t in sd.values()))
    path = tmp_path_factory.mktemp("np") / "m.bin"
    if how == "safetensors":
        save_file({k: v.contiguous() for k, v in sd.items() if ".tied" not in k}, str(path))
    else:
        torch.save(sd, path, _use_new_zipfile_serialization=how != "legacy")
        if how == "deflated":
            _rewrite_deflated(path)
    ckpt = load_checkpoint(path, validate_values=False)
    for lazy in ckpt.tensors.values():
        whole = lazy.load_array()
        assert _same(whole, to_numpy(lazy.load()))
        if lazy.ndim:
            for rows in (1, 2):
                assert _same(np.concatenate(list(lazy.iter_arrays(rows))), whole)


_NP = {
    torch.float32: np.float32,
    torch.float64: np.float64,
    torch.float16: np.float16,
    torch.int64: np.int64,
    torch.int16: np.int16,
    torch.uint16: np.uint16,
}
_STORAGE = {
    torch.float32: torch.FloatStorage,
    torch.float64: torch.DoubleStorage,
    torch.float16: torch.HalfStorage,
    torch.int64: torch.LongStorage,
    torch.int16: torch.ShortStorage,
}


@given(
    st.sampled_from(sorted(_STORAGE, key=str)),
    st.integers(1, 5),
    st.integers(1, 5),
    st.integers(0, 2**16),
    st.booleans(),
)
def test_big_endian_archives_equal_torch_load(tmp_path_factory, dtype, rows, cols, seed, tied):
    values = (np.random.default_rng(seed).standard_normal((rows, cols)) * 100).astype(_NP[dtype])
    s = S("0", _STORAGE[dtype], rows * cols)
    layer = np.ones((2, 2), dtype=np.float32)
    obj = {
        "fc.weight": T(S("1", torch.FloatStorage, 4), 0, (2, 2), (2, 1)),
        "a": T(s, 0, (rows, cols), (cols, 1)),
    }
    if tied:
        obj["b"] = T(s, 0, (cols, rows), (1, cols))
    path = torch_zip(
        tmp_path_factory.mktemp("be") / "be.pt",
        obj,
        {"0": be(values), "1": be(layer)},
        byteorder="big",
    )
    reference = torch.load(path, weights_only=True)
    ckpt = load_checkpoint(path, validate_values=False)
    for key, value in reference.items():
        for _ in range(2):
            assert torch.equal(ckpt.tensors[key].load(), value)
    np.testing.assert_array_equal(ckpt.tensors["a"].load().numpy(), values)


# --------------------------------------------------------------------------- .pt2 graphs
class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.branch = nn.Conv2d(4, 4, 3, padding=1)
        self.side = nn.Conv2d(3, 2, 1)
        self.fc = nn.Linear(6 * 16, 5)

    def forward(self, x):
        h = torch.relu(self.bn(self.stem(x)))
        h = h + self.branch(h)
        h = torch.cat([h, self.side(x)], 1)
        return self.fc(torch.flatten(h, 1))


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)  # test-side seeding of the init
    model = _Residual().eval()
    with torch.no_grad():
        model.branch.weight[:, :2] = 0.0
        model.stem.weight[1] = 0.0
    batch = torch.export.Dim("batch", min=2, max=64)
    ep = torch.export.export(model, (torch.randn(4, 3, 4, 4),), dynamic_shapes={"x": {0: batch}})
    path = tmp_path_factory.mktemp("graph") / "r.pt2"
    torch.export.save(ep, path)
    return path, model


def test_json_graph_gives_torchs_answer(exported):
    path, model = exported
    ckpt = load_checkpoint(path)
    assert type(ckpt.exported).__name__ == "ExportedGraph"
    ours = check_collapse(ckpt)
    assert ours.graph == "export"
    theirs = check_collapse(dataclasses.replace(ckpt, exported=torch.export.load(path)))
    assert ours.to_dict()["layers"] == theirs.to_dict()["layers"]
    # the batch is symbolic: the exact count runs at batch 1 on the example's (3, 4, 4)
    assert ours.effective_exact and ours.input_shape == (3, 4, 4)
    live = check_collapse(model, input_shape=(3, 4, 4))
    assert ours.to_dict()["layers"] == live.to_dict()["layers"]
    assert ours.layers[0].dead_in == (1,)


def test_real_expr_strs_pass_the_grammar(exported):
    path, _ = exported
    with zipfile.ZipFile(path) as z:
        text = z.read(next(n for n in z.namelist() if n.endswith("models/model.json"))).decode()
    found = set(re.findall(r'"expr_str": "((?:[^"\\]|\\.)*)"', text))
    assert found, "the dynamic export carries symbolic shapes"
    for expr in found:
        check_expr(json.loads(f'"{expr}"'))


def test_expr_strs_of_a_shape_heavy_export_pass_the_grammar(tmp_path):
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x, y):
            n = x.shape[0]
            w = torch.cat([x, y], 0).reshape(-1, 4, 2).flatten(1)
            u = torch.nn.functional.pad(w, (0, 0, 0, n % 3))
            return self.fc(x[: n // 2]).sum() + self.fc(u).sum()

    b = 2 * torch.export.Dim("_b", min=2, max=1 << 19)
    dyn = {"x": {0: b}, "y": {0: torch.export.Dim("c", min=2)}}
    ep = torch.export.export(Net(), (torch.randn(6, 8), torch.randn(5, 8)), dynamic_shapes=dyn)
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    with zipfile.ZipFile(buf) as z:
        doc = json.loads(z.read(next(n for n in z.namelist() if n.endswith("models/model.json"))))
    found = []
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            found.extend(v for k, v in node.items() if k == "expr_str")
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    assert any("Mod(" in e for e in found) and any("Add(" in e for e in found)
    for expr in found:
        check_expr(expr)


@st.composite
def shape_exprs(draw, depth=3):
    import sympy
    from torch.utils._sympy.functions import FloorDiv, Mod

    syms = [sympy.Symbol(f"s{i}", positive=True, integer=True) for i in range(3)]
    if depth == 0 or draw(st.booleans()):
        return draw(st.sampled_from([*syms, sympy.Integer(draw(st.integers(-64, 1 << 40)))]))
    a, b = draw(shape_exprs(depth - 1)), draw(shape_exprs(depth - 1))
    op = draw(st.sampled_from(["add", "mul", "mod", "floordiv", "max"]))
    if op in ("mod", "floordiv"):
        b = draw(st.sampled_from(syms)) + 1
    return {
        "add": lambda: a + b,
        "mul": lambda: a * b,
        "mod": lambda: Mod(a, b),
        "floordiv": lambda: FloorDiv(a, b),
        "max": lambda: sympy.Max(a, b),
    }[op]()


@given(shape_exprs())
def test_srepr_of_shape_expressions_passes_the_grammar(expr):
    import sympy

    check_expr(sympy.srepr(expr))


@given(st.text(max_size=200))
def test_grammar_check_only_refuses(text):
    try:
        check_expr(text)
    except ExprRefused:
        pass


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('id')",
        "Integer(1).__class__",
        "Symbol('s0').subs",
        "Pow(Integer(9), Pow(Integer(9), Integer(9)))",
        "Pow(Symbol('s0'), Integer(100000))",
        "Integer(" + "9" * 40 + ")",
        "Symbol('__builtins__')",
        "Symbol('s0', positive=__import__('os'))",
        "eval('1')",
        "Float('nan', precision=53)",
        "Add(*[Integer(1)])",
        "(lambda: 1)()",
        "Add(" * 40 + "Integer(1)" + ")" * 40,
        "x" * 5000,
    ],
)
def test_grammar_refuses(text):
    with pytest.raises(ExprRefused):
        check_expr(text)


# --------------------------------------------------------------------------- pickle fuzz
def _valid_pickle() -> bytes:
    buf = io.BytesIO()
    torch.save({"fc.weight": torch.ones(2, 3), "fc.bias": torch.zeros(2)}, buf)
    with zipfile.ZipFile(buf) as z:
        return z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))


_PICKLE = _valid_pickle()


@given(st.data())
def test_mutated_pickles_are_read_or_refused(data):
    from sigprop.io import CheckpointError
    from sigprop.io.pickles import unpickle

    raw = bytearray(_PICKLE)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "cut"]))
        if op == "flip":
            raw[pos] = data.draw(st.integers(0, 255))
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        else:
            del raw[pos : pos + data.draw(st.integers(1, 8))]
        if not raw:
            break
    try:
        unpickle(bytes(raw))
    except CheckpointError as exc:
        assert "\n" not in str(exc)


@given(st.binary(max_size=400))
def test_random_pickles_are_read_or_refused(blob):
    from sigprop.io import CheckpointError
    from sigprop.io.pickles import unpickle

    try:
        unpickle(b"\x80\x02" + blob)
    except CheckpointError:
        pass
