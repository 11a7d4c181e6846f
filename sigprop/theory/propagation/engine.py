"""The graph IR and the propagation engine.

A :class:`TheoryGraph` is a tuple of :class:`TheoryNode` in topological order; each node
names its op (see :data:`OP_NAMES` and README.md for every op's parameters) and its input
nodes. :func:`propagate` runs the forward rules from Gaussian inputs, then the backward
rules from the output gradient (g = ``output_grad`` at every output element), summing the
gradients of a node's consumers (fan-out), and reports per node the forward summaries, the
gradient summaries and, per weight node, E‖∂L/∂W ⊙ M‖² of one sample.

A node whose op is ``"unmapped"`` stops propagation: it and every node it feeds are
reported in ``unreachable``; every node whose gradient would pass through it is reported
in ``backward_unreachable`` (its gradient is not summed from a part of its consumers,
never guessed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sigprop._json import to_jsonable
from sigprop.theory.propagation.dense import DEFAULT_BUDGET
from sigprop.theory.propagation.ops import OPS, Context, check_params
from sigprop.theory.propagation.records import Grad, Moments
from sigprop.validate import InvalidInput, InvalidType, nonneg_float, positive_int

__all__ = [
    "TheoryNode",
    "TheoryGraph",
    "NodeResult",
    "PropagationResult",
    "propagate",
    "OP_NAMES",
]

#: every op name of the IR ("input", "constant" and "unmapped" besides the rules)
OP_NAMES = ("input", "constant", "unmapped") + tuple(OPS)


@dataclass(frozen=True)
class TheoryNode:
    """One node: ``name`` (unique), ``op`` (one of :data:`OP_NAMES`), the names of its
    ``inputs`` (earlier nodes) and ``params`` (numpy arrays, numbers, strings)."""

    name: str
    op: str
    inputs: tuple[str, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise InvalidType(f"node name must be a non-empty string, got {self.name!r}")
        if self.op not in OP_NAMES:
            raise InvalidInput(f"node {self.name!r}: unknown op {self.op!r}")
        object.__setattr__(self, "inputs", tuple(self.inputs))
        if not all(isinstance(i, str) for i in self.inputs):
            raise InvalidType(f"node {self.name!r}: inputs must be node names")
        if not isinstance(self.params, Mapping):
            raise InvalidType(f"node {self.name!r}: params must be a mapping")
        object.__setattr__(self, "params", dict(self.params))


@dataclass(frozen=True)
class TheoryGraph:
    """Nodes in topological order; ``outputs`` defaults to the nodes nothing consumes."""

    nodes: tuple[TheoryNode, ...]
    outputs: tuple[str, ...] | None = None

    def __post_init__(self):
        nodes = tuple(self.nodes)
        object.__setattr__(self, "nodes", nodes)
        seen: set[str] = set()
        for n in nodes:
            if not isinstance(n, TheoryNode):
                raise InvalidType("a TheoryGraph holds TheoryNode objects")
            if n.name in seen:
                raise InvalidInput(f"duplicate node name {n.name!r}")
            for i in n.inputs:
                if i not in seen:
                    raise InvalidInput(f"node {n.name!r} reads {i!r}, which is not an earlier node")
            seen.add(n.name)
            if n.op in ("input", "constant") and n.inputs:
                raise InvalidInput(f"node {n.name!r} ({n.op}) takes no inputs")
            if n.op in OPS:
                lo, hi = OPS[n.op].arity
                if len(n.inputs) < lo or (hi >= 0 and len(n.inputs) > hi):
                    raise InvalidInput(f"node {n.name!r} ({n.op}) has {len(n.inputs)} inputs")
        if self.outputs is not None:
            outs = tuple(self.outputs)
            for o in outs:
                if o not in seen:
                    raise InvalidInput(f"output {o!r} is not a node")
            object.__setattr__(self, "outputs", outs)

    def output_names(self) -> tuple[str, ...]:
        if self.outputs is not None:
            return self.outputs
        used = {i for n in self.nodes for i in n.inputs}
        return tuple(n.name for n in self.nodes if n.name not in used and n.op != "constant")


@dataclass(frozen=True)
class NodeResult:
    """Per-node report: ``forward`` (see :meth:`Moments.summary`), ``backward``
    (g summaries, None where no gradient reaches the node or it is backward-unreachable),
    ``weight_grad`` (E‖∂L/∂W ⊙ M‖² of one sample; a dict for attention), ``info`` (e.g. a
    conv's path) and ``internals`` (attention: q, k, v, attn, out)."""

    name: str
    op: str
    forward: dict
    backward: dict | None = None
    weight_grad: Any = None
    info: dict | None = None
    internals: dict | None = None

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "name": self.name,
                "op": self.op,
                "forward": self.forward,
                "backward": self.backward,
                "weight_grad": self.weight_grad,
                "info": self.info,
                "internals": self.internals,
            },
            "NodeResult",
        )


@dataclass(frozen=True)
class PropagationResult:
    """``nodes`` (name → :class:`NodeResult`, reachable nodes in graph order),
    ``unreachable`` and ``backward_unreachable`` (names), the settings, and the raw
    records (``moments``, ``grads``: name → :class:`Moments` / :class:`Grad`)."""

    nodes: dict
    unreachable: tuple[str, ...]
    backward_unreachable: tuple[str, ...]
    q0: float
    c0: float | None
    batch_size: int
    moments: dict = field(repr=False)
    grads: dict = field(repr=False)

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "q0": self.q0,
                "c0": self.c0,
                "batch_size": self.batch_size,
                "unreachable": list(self.unreachable),
                "backward_unreachable": list(self.backward_unreachable),
                "nodes": {k: v.to_dict() for k, v in self.nodes.items()},
            },
            "PropagationResult",
        )


def _source(node: TheoryNode, q0: float, c0) -> Moments:
    if node.op == "input":
        extra = set(node.params) - {"shape"}
        if extra or "shape" not in node.params:
            raise InvalidInput(f"input node {node.name!r} takes exactly the parameter 'shape'")
        return Moments.gaussian_input(tuple(node.params["shape"]), q0, c0)
    extra = set(node.params) - {"value"}
    if extra or "value" not in node.params:
        raise InvalidInput(f"constant node {node.name!r} takes exactly the parameter 'value'")
    return Moments.constant(node.params["value"], track_pair=c0 is not None)


def propagate(
    graph: TheoryGraph,
    q0: float = 1.0,
    c0: float | None = None,
    batch_size: int = 32,
    *,
    output_grad: float = 1.0,
    budget: float = DEFAULT_BUDGET,
    backward: bool = True,
    means: str = "quenched",
) -> PropagationResult:
    """Forward and backward propagation of mean-field moments through ``graph``.

    ``q0``: variance of the iid Gaussian input entries; ``c0``: correlation of the
    tracked input pair (None: no pair); ``batch_size``: B for train-mode BatchNorm and
    Brock et al.'s summaries; ``output_grad``: g at every output element; ``budget``:
    multiply-adds above which a conv uses the rank-1 factorisation; ``backward``: False
    skips the backward pass (no gradients, weight-gradient norms or backward summaries);
    ``means``: ``"quenched"`` (linear and conv nodes that carry their signed weights ``w``
    map the means with them, ``dense.py`` doc) or ``"annealed"`` (every mean of a weight
    layer's output is its bias: the sign-averaged theory).
    """
    if not isinstance(graph, TheoryGraph):
        raise InvalidType(f"propagate needs a TheoryGraph, got {type(graph).__name__}")
    q0 = nonneg_float(q0, "q0")
    batch_size = positive_int(batch_size, "batch_size")
    output_grad = nonneg_float(output_grad, "output_grad")
    if means not in ("quenched", "annealed"):
        raise InvalidInput(f"means must be 'quenched' or 'annealed', got {means!r}")
    ctx = Context(batch_size=batch_size, budget=float(budget), quenched=means == "quenched")
    params = {n.name: check_params(n.op, n.params) for n in graph.nodes if n.op in OPS}
    moments: dict[str, Moments] = {}
    states: dict[str, Any] = {}
    infos: dict[str, dict] = {}
    unreachable: list[str] = []
    for node in graph.nodes:
        if node.op == "unmapped" or any(i in unreachable for i in node.inputs):
            unreachable.append(node.name)
            continue
        if node.op in ("input", "constant"):
            moments[node.name] = _source(node, q0, c0)
            continue
        ins = [moments[i] for i in node.inputs]
        try:
            out, state = OPS[node.op].forward(ins, params[node.name], ctx)
        except InvalidInput as exc:
            raise InvalidInput(f"node {node.name!r} ({node.op}): {exc}") from None
        moments[node.name], states[node.name] = out, state
        if OPS[node.op].info is not None:
            infos[node.name] = OPS[node.op].info(ins, out, params[node.name], ctx)

    # ---- backward -----------------------------------------------------------------
    consumers: dict[str, list[str]] = {n.name: [] for n in graph.nodes}
    for n in graph.nodes:
        for i in n.inputs:
            consumers[i].append(n.name)
    outputs = [o for o in graph.output_names() if o in moments]
    by_name = {n.name: n for n in graph.nodes}
    incomplete: set[str] = set(unreachable)
    for node in reversed(graph.nodes):  # a node is incomplete if any consumer is
        if any(c in incomplete for c in consumers[node.name]):
            incomplete.add(node.name)
    grads: dict[str, Grad] = {}
    internals: dict[str, dict] = {}
    pending: dict[str, Grad] = {}
    for o in outputs if backward else ():
        if o not in incomplete:
            g = Grad.ones(moments[o], output_grad)
            pending[o] = pending[o] + g if o in pending else g
    for node in reversed(graph.nodes):
        name = node.name
        if name in incomplete or name not in pending:
            continue
        g = pending.pop(name)
        grads[name] = g
        if node.op in ("input", "constant"):
            continue
        op = OPS[node.op]
        ins = [moments[i] for i in node.inputs]
        try:
            gins, internals[name] = op.backward(
                ins, moments[name], states[name], g, params[name], ctx
            )
        except InvalidInput as exc:
            raise InvalidInput(f"node {name!r} ({node.op}) backward: {exc}") from None
        for src, gi in zip(node.inputs, gins):
            if gi is None or by_name[src].op == "constant":
                continue
            pending[src] = pending[src] + gi if src in pending else gi
    backward_unreachable = tuple(n.name for n in graph.nodes if n.name in incomplete)

    # ---- report ---------------------------------------------------------------------
    results = {}
    for node in graph.nodes:
        name = node.name
        if name not in moments:
            continue
        m = moments[name]
        wgrad = None
        op = OPS.get(node.op)
        if op is not None and op.weight_grad is not None and name in grads:
            ins = [moments[i] for i in node.inputs]
            wgrad = op.weight_grad(
                ins, states[name], grads[name], internals.get(name, {}), params[name], ctx
            )
        sub = None
        if node.op == "attention":
            sub = {}
            for key in ("q", "k", "v", "attn", "out"):
                entry = {"forward": states[name][key].summary(batch_size)}
                gi = internals.get(name, {}).get(key)
                entry["backward"] = None if gi is None else gi.summary()
                sub[key] = entry
        results[name] = NodeResult(
            name=name,
            op=node.op,
            forward=m.summary(batch_size),
            backward=grads[name].summary() if name in grads else None,
            weight_grad=wgrad,
            info=infos.get(name),
            internals=sub,
        )
    return PropagationResult(
        nodes=results,
        unreachable=tuple(unreachable),
        backward_unreachable=backward_unreachable,
        q0=q0,
        c0=None if c0 is None else float(c0),
        batch_size=batch_size,
        moments=moments,
        grads=grads,
    )


def chain(nodes: Sequence[tuple[str, str, dict]], shape) -> TheoryGraph:
    """A graph of one input followed by ``(name, op, params)`` nodes applied in turn."""
    out = [TheoryNode("input", "input", (), {"shape": list(shape)})]
    prev = "input"
    for name, op, prm in nodes:
        out.append(TheoryNode(name, op, (prev,), prm))
        prev = name
    return TheoryGraph(tuple(out))
