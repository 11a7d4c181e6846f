"""``torch.export`` programs (``.pt2``): the graph read from the archive's JSON.

**Why not ``torch.export.load``.** Loading an archive with torch runs code from it in
several ways: every symbolic-shape string (``expr_str``) goes through ``sympy.sympify``,
which evaluates Python; pickled weights, constants and sample inputs are unpickled (some
with ``weights_only=False``); opaque constants go through ``pickle.loads``; node targets are
resolved by walking attributes of ``torch``; guard code is compiled. Connectivity needs none
of it: the nodes, their operators and tensor arguments, the graph signature (which input is
a parameter, a buffer, a user input) and the weights. So sigprop reads
``models/<name>.json`` and the weight/constant configs itself (bounded JSON,
:mod:`sigprop.io.safetensors_files`), builds an :class:`ExportedGraph` with the attributes of
``torch.export.ExportedProgram`` that :func:`sigprop.diagnostics.collapse.export_graph`
reads, and reads raw weights lazily from the zip entries. No string of the archive is
evaluated, imported or compiled.

On top of that, an archive is refused when:

* it holds an ``expr_str`` outside the grammar torch writes (:mod:`sigprop.io.symexpr`):
  a doctored archive is reported, and none is ever passed on to ``torch.export.load``;
* it needs unpickling or holds compiled code (pickled weights or constants, custom or
  opaque objects, legacy weight files, AOTInductor/ExecuTorch payloads), unless
  ``trust_pickle=True``: then it is loaded with ``torch.export.load`` (after the zip and
  ``expr_str`` checks), which runs that code.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

from sigprop.io import limits
from sigprop.io.dtypes import EXPORT_SCALAR_TYPES, lookup
from sigprop.io.layers import find_layers
from sigprop.io.lazy import LazyTensor, Stored, check_totals, check_view, dtype_of
from sigprop.io.pt2_graph import ExportedGraph, ExportNode, Malformed, build_graph
from sigprop.io.records import Checkpoint
from sigprop.io.safetensors_files import parse_json
from sigprop.io.source import CheckpointError, FileSource
from sigprop.io.symexpr import ExprRefused, check_expr
from sigprop.io.zipview import ZipEntry, ZipView

__all__ = ["ExportNode", "ExportedGraph", "is_export", "load_export"]

_PATH_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,255}")
_STRIDED = 7  # schema.Layout.Strided


def is_export(view: ZipView) -> bool:
    return any(n.endswith("archive_format") for n in view.names) or any(
        "/models/" in n and n.endswith(".json") for n in view.names
    )


# --------------------------------------------------------------------------- loading
def load_export(source: FileSource, view: ZipView, trust_pickle: bool) -> Checkpoint:
    where = source.display
    models = [n for n in view.names if re.search(r"(^|/)models/[^/]+\.json$", n)]
    if len(models) != 1:
        raise CheckpointError(
            f"{where}: a torch.export archive with {len(models)} programs (expected one)"
        )
    prefix, model = re.match(r"(.*?)models/([^/]+)\.json$", models[0]).groups()
    docs = {"program": _json(view, view.get(models[0]), "program JSON")}
    for kind, fmt in (
        ("weights", "{p}data/weights/{m}_weights_config.json"),
        ("constants", "{p}data/constants/{m}_constants_config.json"),
    ):
        entry = view.get(fmt.format(p=prefix, m=model))
        docs[kind] = _json(view, entry, f"{kind} config") if entry is not None else {"config": {}}
    for name, doc in docs.items():
        _check_expressions(where, doc, name)
    reason = _needs_trust(view, prefix, model, docs)
    if reason is not None:
        if not trust_pickle:
            raise CheckpointError(
                f"{where}: refusing to load the torch.export program: {reason}; "
                "pass --trust-pickle (trust_pickle=True) only for a file you trust"
            )
        return _trusted(source)
    try:
        tensors, constants, stored_bytes = _payloads(source, view, prefix, docs)
        graph = build_graph(docs["program"], tensors, constants)
    except Malformed as exc:
        raise CheckpointError(f"{where}: malformed torch.export program: {exc}") from None
    every = {**tensors, **constants}
    check_totals(where, every, stored_bytes)
    layers, masks, layout, layer_notes = find_layers(where, every)
    notes = ["layer graph read from the exported program", *layer_notes]
    guards = docs["program"].get("guards_code") or []
    if guards:
        notes.append(f"the program carries {len(guards)} shape guard(s) (code sigprop never runs)")
    return Checkpoint(
        path=source.path,
        format="torch.export",
        layout=layout,
        tensors=every,
        layers=layers,
        masks=masks,
        notes=tuple(notes),
        exported=graph,
    )


def _json(view: ZipView, entry: ZipEntry | None, what: str) -> dict:
    if entry is None:
        raise CheckpointError(f"{view.source.display}: the archive has no {what}")
    doc = parse_json(view.source.display, view.read(entry, limits.MAX_JSON_BYTES, what), what)
    if not isinstance(doc, dict):
        raise CheckpointError(f"{view.source.display}: the {what} is not a JSON object")
    return doc


def _check_expressions(where: str, doc: Any, what: str) -> None:
    """Every ``expr_str`` anywhere in the document must pass :func:`check_expr`."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr_str":
                    try:
                        check_expr(value)
                    except ExprRefused as exc:
                        raise CheckpointError(
                            f"{where}: refusing the torch.export program: a symbolic-shape "
                            f"expression (expr_str) {exc} -- torch would evaluate it as Python"
                        ) from None
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _needs_trust(view: ZipView, prefix: str, model: str, docs: dict) -> str | None:
    """Why ``torch.export.load`` would unpickle or run code from this archive, or None."""
    for n in view.names:
        low = n.lower()
        if any(d in low for d in ("aotinductor", "/executorch/", "/mtia", "xl_model_weights")) or (
            low.endswith((".so", ".dll", ".dylib", ".pte", ".cubin"))
        ):
            return f"it contains compiled code ({n})"
    for legacy in (f"{prefix}data/weights/{model}.pt", f"{prefix}data/constants/{model}.pt"):
        if legacy in view.entries:
            return f"it stores pickled tensors in the legacy layout ({legacy})"
    for kind in ("weights", "constants"):
        config = docs[kind].get("config", {})
        if not isinstance(config, dict):
            return f"its {kind} config is malformed"
        for fqn, meta in config.items():
            if not isinstance(meta, dict):
                return f"its {kind} config is malformed"
            if meta.get("use_pickle"):
                return f"entry {fqn!r} is pickled"
            if kind == "constants" and not str(meta.get("path_name", "")).startswith("tensor"):
                return f"constant {fqn!r} is a custom object"
    return None


def _trusted(source: FileSource) -> Checkpoint:
    import torch

    from sigprop.io.torch_files import with_warnings

    where = source.display
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            program = torch.export.load(source.reopen_path())
        except Exception as exc:  # noqa: BLE001
            text = " ".join(str(exc).split())[:300]
            raise CheckpointError(
                f"{where}: cannot load the torch.export program: {text}"
            ) from None
    state = dict(program.state_dict)
    for key, value in (getattr(program, "constants", None) or {}).items():
        if isinstance(value, torch.Tensor):
            state[key] = value
    tensors = {}
    for key, value in state.items():
        dtype_of(where, key, value.dtype)
        tensors[key] = LazyTensor.from_tensor(key, value.detach())
    check_totals(where, tensors, sum(t.nbytes for t in tensors.values()))
    layers, masks, layout, notes = find_layers(where, tensors)
    ckpt = Checkpoint(
        path=source.path,
        format="torch.export",
        layout=layout,
        tensors=tensors,
        layers=layers,
        masks=masks,
        notes=("layer graph read from the exported program (loaded with torch, trusted)", *notes),
        exported=program,
    )
    return with_warnings(ckpt, caught)


# --------------------------------------------------------------------------- payloads
def _as_int(value: Any, what: str) -> int:
    if not (isinstance(value, dict) and set(value) == {"as_int"}):
        raise Malformed(f"{what} is symbolic or malformed (a stored weight has a fixed shape)")
    n = value["as_int"]
    if type(n) is not int or not 0 <= n < 1 << 62:
        raise Malformed(f"{what} is not a non-negative integer")
    return n


def _payloads(source: FileSource, view: ZipView, prefix: str, docs: dict):
    where = source.display
    out: dict[str, dict[str, LazyTensor]] = {"weights": {}, "constants": {}}
    stores: dict[str, Stored] = {}
    for kind in ("weights", "constants"):
        for fqn, meta in docs[kind].get("config", {}).items():
            if len(fqn) > limits.MAX_NAME_CHARS:
                raise Malformed("a weight name is too long")
            path_name = meta.get("path_name")
            tmeta = meta.get("tensor_meta")
            if not (isinstance(path_name, str) and _PATH_NAME.fullmatch(path_name)):
                raise Malformed(f"weight {fqn!r} has a malformed path name")
            if not isinstance(tmeta, dict):
                raise Malformed(f"weight {fqn!r} has no tensor metadata")
            if tmeta.get("layout", _STRIDED) != _STRIDED:
                raise CheckpointError(f"{where}: weight {fqn!r} is not a strided (dense) tensor")
            code = tmeta.get("dtype")
            dt = lookup(EXPORT_SCALAR_TYPES.get(code)) if type(code) is int else None
            if dt is None:
                raise CheckpointError(
                    f"{where}: weight {fqn!r} has unsupported dtype code {code!r}"
                )
            sizes, strides = tmeta.get("sizes"), tmeta.get("strides")
            if not (isinstance(sizes, list) and isinstance(strides, list)):
                raise Malformed(f"weight {fqn!r} has no sizes or strides")
            if len(sizes) > limits.MAX_NDIM or len(strides) != len(sizes):
                raise Malformed(f"weight {fqn!r} has malformed sizes or strides")
            size = tuple(_as_int(s, f"a size of {fqn!r}") for s in sizes)
            stride = tuple(_as_int(s, f"a stride of {fqn!r}") for s in strides)
            offset = _as_int(tmeta.get("storage_offset", {"as_int": 0}), f"the offset of {fqn!r}")
            record = f"{prefix}data/{kind}/{path_name}"
            entry = view.get(record)
            if entry is None:
                raise Malformed(f"weight {fqn!r} refers to a missing entry {path_name!r}")
            if entry.size % dt.itemsize:
                raise Malformed(f"entry {path_name!r} is not a whole number of {dt.name} values")
            check_view(where, fqn, dt, entry.size, offset, size, stride)
            if record not in stores:
                inflate = None
                if not entry.stored:
                    if entry.size > limits.MAX_INFLATED_BYTES:
                        raise CheckpointError(
                            f"{where}: compressed entry {path_name!r} inflates to {entry.size} "
                            f"bytes, more than the limit of {limits.MAX_INFLATED_BYTES}"
                        )
                    inflate = lambda entry=entry: view.read(  # noqa: E731
                        entry, limits.MAX_INFLATED_BYTES, "compressed weight"
                    )
                stores[record] = Stored(
                    source,
                    entry.data_start,
                    entry.size,
                    big_endian=_big_endian(view, prefix),
                    inflate=inflate,
                )
            out[kind][fqn] = LazyTensor.from_file(fqn, stores[record], dt, offset, size, stride)
    return out["weights"], out["constants"], sum(st.nbytes for st in stores.values())


def _big_endian(view: ZipView, prefix: str) -> bool:
    entry = view.get(f"{prefix}byteorder")
    if entry is None:
        return False
    text = view.read(entry, 16, "byte-order record")
    if text not in (b"little", b"big"):
        raise CheckpointError(f"{view.source.display}: unknown byte order {text[:16]!r}")
    return text == b"big"
