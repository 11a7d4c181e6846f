"""The op table of the graph IR: each op name → its parameters, forward and backward rule.

Each entry maps a :class:`~sigprop.theory.propagation.engine.TheoryNode` (its input
records and params) onto the rule functions of this package. Parameter names, shapes and
meaning are the contract documented in this folder's README.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from sigprop.theory.propagation import dense as L
from sigprop.theory.propagation import norm as N
from sigprop.theory.propagation import pointwise as P
from sigprop.theory.propagation import pool as PL
from sigprop.theory.propagation import selfattn as A
from sigprop.theory.propagation import weights as W
from sigprop.validate import InvalidInput

__all__ = ["OPS", "Op", "Context"]


@dataclass
class Context:
    batch_size: int
    budget: float
    quenched: bool = True  # linear/conv map the means with their signed weights ``w``


@dataclass(frozen=True)
class Op:
    """Parameters (required, optional with defaults) and rules of one op."""

    required: tuple[str, ...]
    optional: dict[str, Any]
    forward: Callable
    backward: Callable | None = None  # (ins, out, state, g, prm, ctx) -> (list, internals)
    weight_grad: Callable | None = None  # (ins, state, g, internals, prm, ctx) -> value
    arity: tuple[int, int] = (1, 1)  # min, max number of inputs (max -1: any)
    info: Callable | None = None


def _arr(prm, key):
    v = prm.get(key)
    if v is None or isinstance(v, W.Checked):
        return v
    return np.asarray(v, dtype=float)


def _single(fn):
    """Forward wrapper for one-input rules without state."""
    return lambda ins, prm, ctx: (fn(ins[0], prm, ctx), None)


def _one_back(fn):
    return lambda ins, out, st, g, prm, ctx: ([fn(ins[0], g, prm, ctx)], {})


# ------------------------------------------------------------------------------ linear
def _lin_kw(prm, ctx):
    w = _arr(prm, "w") if ctx.quenched else None
    return dict(w2=_arr(prm, "w2"), b2=_arr(prm, "b2"), b=_arr(prm, "b"), w=w)


def _conv_geo(prm):
    return {k: prm[k] for k in ("stride", "padding", "dilation", "groups")}


def _conv_forward(ins, prm, ctx):
    kw = _lin_kw(prm, ctx)
    out = L.conv(
        ins[0], kw["w2"], kw["b2"], b=kw["b"], w=kw["w"], budget=ctx.budget, **_conv_geo(prm)
    )
    return out, None


def _conv_info(ins, out, prm, ctx):
    w2 = np.shape(prm["w2"])
    cost = float(w2[0]) * w2[1] * int(np.prod(w2[2:])) * out.q_cls[0].size
    return {"cost": cost, "path": "exact" if cost <= ctx.budget else "rank1"}


OPS: dict[str, Op] = {}

OPS["linear"] = Op(
    required=("w2",),
    optional={"b2": None, "b": None, "mask": None, "w": None},
    forward=lambda ins, prm, ctx: (L.linear(ins[0], **_lin_kw(prm, ctx)), None),
    backward=_one_back(lambda m, g, prm, ctx: L.linear_backward(m, g, _arr(prm, "w2"))),
    weight_grad=lambda ins, st, g, it, prm, ctx: L.linear_weight_grad(
        ins[0], g, _arr(prm, "w2"), _arr(prm, "mask"), batch_size=ctx.batch_size
    ),
)
OPS["conv"] = Op(
    required=("w2",),
    optional={
        "b2": None,
        "b": None,
        "mask": None,
        "w": None,
        "stride": 1,
        "padding": 0,
        "dilation": 1,
        "groups": 1,
    },
    forward=_conv_forward,
    backward=_one_back(
        lambda m, g, prm, ctx: L.conv_backward(
            m, g, _arr(prm, "w2"), budget=ctx.budget, **_conv_geo(prm)
        )
    ),
    weight_grad=lambda ins, st, g, it, prm, ctx: L.conv_weight_grad(
        ins[0],
        g,
        _arr(prm, "w2"),
        mask=_arr(prm, "mask"),
        budget=ctx.budget,
        batch_size=ctx.batch_size,
        **_conv_geo(prm),
    ),
    info=_conv_info,
)

# ------------------------------------------------------------------------------ pointwise
OPS["elementwise"] = Op(
    required=("activation",),
    optional={},
    forward=_single(lambda m, prm, ctx: P.elementwise(m, prm["activation"])),
    backward=_one_back(lambda m, g, prm, ctx: P.elementwise_backward(m, g, prm["activation"])),
)
OPS["affine"] = Op(
    required=(),
    optional={"scale": 1.0, "shift": 0.0},
    forward=_single(lambda m, prm, ctx: P.affine(m, prm["scale"], prm["shift"])),
    backward=_one_back(lambda m, g, prm, ctx: P.affine_backward(m, g, prm["scale"])),
)
OPS["scale"] = Op(
    required=("factor",),
    optional={},
    forward=_single(lambda m, prm, ctx: P.scale(m, prm["factor"])),
    backward=_one_back(lambda m, g, prm, ctx: P.affine_backward(m, g, prm["factor"])),
)
OPS["dropout"] = Op(
    required=("p",),
    optional={"training": True},
    forward=_single(lambda m, prm, ctx: P.dropout(m, prm["p"], bool(prm["training"]))),
    backward=_one_back(
        lambda m, g, prm, ctx: P.dropout_backward(m, g, prm["p"], bool(prm["training"]))
    ),
)
OPS["identity"] = Op(
    required=(),
    optional={},
    forward=_single(lambda m, prm, ctx: m),
    backward=_one_back(lambda m, g, prm, ctx: g),
)
OPS["add"] = Op(
    required=(),
    optional={"scales": None},
    forward=lambda ins, prm, ctx: (P.add(ins, prm["scales"]), None),
    backward=lambda ins, out, st, g, prm, ctx: (P.add_backward(ins, g, prm["scales"]), {}),
    arity=(1, -1),
)
OPS["cat"] = Op(
    required=(),
    optional={"axis": "channel"},
    forward=lambda ins, prm, ctx: (P.cat(ins, prm["axis"]), None),
    backward=lambda ins, out, st, g, prm, ctx: (P.cat_backward(ins, g, prm["axis"]), {}),
    arity=(1, -1),
)
OPS["mul"] = Op(
    required=(),
    optional={},
    forward=lambda ins, prm, ctx: (P.mul(ins[0], ins[1]), None),
    backward=lambda ins, out, st, g, prm, ctx: (P.mul_backward(ins[0], ins[1], g), {}),
    arity=(2, 2),
)
OPS["flatten"] = Op(
    required=(),
    optional={},
    forward=_single(lambda m, prm, ctx: P.flatten(m)),
    backward=_one_back(lambda m, g, prm, ctx: P.flatten_backward(m, g)),
)
OPS["flatten_positions"] = Op(
    required=(),
    optional={},
    forward=_single(lambda m, prm, ctx: P.flatten_positions(m)),
    backward=_one_back(lambda m, g, prm, ctx: P.flatten_positions_backward(m, g)),
)
OPS["select_position"] = Op(
    required=("index",),
    optional={},
    forward=_single(lambda m, prm, ctx: P.select_position(m, prm["index"])),
    backward=_one_back(lambda m, g, prm, ctx: P.select_position_backward(m, g, prm["index"])),
)

# ------------------------------------------------------------------------------ norms
_BN = {"gamma": None, "beta": None, "eps": 1e-5, "running_mean": None, "running_var": None}


def _bn_forward(m, prm, ctx):
    if prm["training"]:
        return N.batchnorm_train(m, ctx.batch_size, prm["gamma"], prm["beta"], prm["eps"])
    return N.batchnorm_eval(
        m, prm["gamma"], prm["beta"], prm["running_mean"], prm["running_var"], prm["eps"]
    )


def _bn_backward(m, g, prm, ctx):
    if prm["training"]:
        return N.batchnorm_train_backward(
            m, g, ctx.batch_size, prm["gamma"], prm["beta"], prm["eps"]
        )
    return N.batchnorm_eval_backward(
        m, g, prm["gamma"], prm["beta"], prm["running_mean"], prm["running_var"], prm["eps"]
    )


OPS["batchnorm"] = Op(
    required=("training",),
    optional=_BN,
    forward=_single(_bn_forward),
    backward=_one_back(_bn_backward),
)
OPS["layernorm"] = Op(
    required=(),
    optional={"gamma": None, "beta": None, "eps": 1e-5},
    forward=_single(lambda m, prm, ctx: N.layernorm(m, prm["gamma"], prm["beta"], prm["eps"])),
    backward=_one_back(
        lambda m, g, prm, ctx: N.layernorm_backward(m, g, prm["gamma"], prm["beta"], prm["eps"])
    ),
)
OPS["groupnorm"] = Op(
    required=("groups",),
    optional={"gamma": None, "beta": None, "eps": 1e-5},
    forward=_single(
        lambda m, prm, ctx: N.groupnorm(m, prm["groups"], prm["gamma"], prm["beta"], prm["eps"])
    ),
    backward=_one_back(
        lambda m, g, prm, ctx: N.groupnorm_backward(
            m, g, prm["groups"], prm["gamma"], prm["beta"], prm["eps"]
        )
    ),
)

# ------------------------------------------------------------------------------ pools
_AVG = ("kernel", "stride", "padding", "ceil_mode", "count_include_pad")
_MAX = ("kernel", "stride", "padding", "dilation", "ceil_mode")
OPS["avg_pool"] = Op(
    required=("kernel",),
    optional={"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True},
    forward=_single(lambda m, prm, ctx: PL.avg_pool(m, **{k: prm[k] for k in _AVG})),
    backward=_one_back(
        lambda m, g, prm, ctx: PL.avg_pool_backward(m, g, **{k: prm[k] for k in _AVG})
    ),
)
OPS["max_pool"] = Op(
    required=("kernel",),
    optional={"stride": None, "padding": 0, "dilation": 1, "ceil_mode": False},
    forward=_single(lambda m, prm, ctx: PL.max_pool(m, **{k: prm[k] for k in _MAX})),
    backward=_one_back(
        lambda m, g, prm, ctx: PL.max_pool_backward(m, g, **{k: prm[k] for k in _MAX})
    ),
)
OPS["adaptive_avg_pool"] = Op(
    required=("output_size",),
    optional={},
    forward=_single(lambda m, prm, ctx: PL.adaptive_avg_pool(m, prm["output_size"])),
    backward=_one_back(
        lambda m, g, prm, ctx: PL.adaptive_avg_pool_backward(m, g, prm["output_size"])
    ),
)

# ------------------------------------------------------------------------------ attention
_ATT = {
    "b2_in": None,
    "b_in": None,
    "b2_out": None,
    "b_out": None,
    "mask_in": None,
    "mask_out": None,
    "dropout": 0.0,
    "training": False,
}


def _att_forward(ins, prm, ctx):
    parts = A.attention(
        ins[0],
        prm["heads"],
        _arr(prm, "w2_in"),
        _arr(prm, "w2_out"),
        _arr(prm, "b2_in"),
        _arr(prm, "b2_out"),
        _arr(prm, "b_in"),
        _arr(prm, "b_out"),
        prm["dropout"],
        bool(prm["training"]),
    )
    return parts["out"], parts


def _att_backward(ins, out, parts, g, prm, ctx):
    gx, internals = A.attention_backward(
        ins[0],
        parts,
        g,
        prm["heads"],
        _arr(prm, "w2_in"),
        _arr(prm, "w2_out"),
        prm["dropout"],
        bool(prm["training"]),
    )
    return [gx], internals


def _att_wgrad(ins, parts, g, internals, prm, ctx):
    return A.attention_weight_grads(
        ins[0],
        parts,
        internals,
        _arr(prm, "w2_in"),
        _arr(prm, "w2_out"),
        _arr(prm, "mask_in"),
        _arr(prm, "mask_out"),
    )


OPS["attention"] = Op(
    required=("heads", "w2_in", "w2_out"),
    optional=_ATT,
    forward=_att_forward,
    backward=_att_backward,
    weight_grad=_att_wgrad,
)


def check_params(op: str, params: dict) -> dict:
    """Defaults filled in; unknown or missing names refused."""
    spec = OPS[op]
    unknown = set(params) - set(spec.required) - set(spec.optional)
    if unknown:
        raise InvalidInput(f"op {op!r} has no parameter(s) {sorted(unknown)}")
    missing = [k for k in spec.required if k not in params]
    if missing:
        raise InvalidInput(f"op {op!r} needs parameter(s) {missing}")
    out = dict(spec.optional)
    out.update(params)
    # validate the weight arrays once (the rules read them in forward, backward and
    # weight-gradient passes)
    for key in ("w2", "w2_in", "w2_out"):
        if out.get(key) is not None:
            out[key] = W.check_w2(out[key], key)
    if op in ("linear", "conv"):
        out["mask"] = W.check_mask(out["mask"], out["w2"])
        if out["w"] is not None:
            out["w"] = W.check_signed(out["w"], out["w2"])
    for key, wkey in (("mask_in", "w2_in"), ("mask_out", "w2_out")):
        if out.get(key) is not None:
            out[key] = W.check_mask(out[key], out[wkey], key)
    return out
