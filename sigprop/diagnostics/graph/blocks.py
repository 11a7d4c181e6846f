"""Residual blocks of a translated graph (for Brock et al.'s signal-propagation plots).

A block is a container module (or an expanded transformer layer) whose output is a
residual sum, possibly through one or two elementwise maps or a LayerNorm (torchvision's
``relu(out + identity)``, a post-norm transformer layer); when several containers share the
output (``layer1`` and ``layer1.1``) the innermost is the block. ``block_parts`` names the
modules producing the sum's inputs (branch and shortcut).
"""

from __future__ import annotations

from sigprop.diagnostics.graph.capture import CapturedGraph

__all__ = ["residual_blocks"]


def residual_blocks(b, cg: CapturedGraph) -> tuple[tuple[str, ...], dict]:
    """Containers whose output is a residual sum (module doc of :class:`Translation`)."""
    ops = {n.name: n for n in b.nodes}
    leaves = {n.module for n in cg.nodes.values() if n.fx is not None and n.fx.op == "call_module"}

    def the_sum(tn: str, depth: int = 0) -> str | None:
        n = ops[tn]
        if n.op == "add" and len(n.inputs) >= 2:
            return tn
        if depth < 2 and n.op in ("elementwise", "identity", "layernorm", "dropout"):
            return the_sum(n.inputs[0], depth + 1)
        return None

    order = {n.name: i for i, n in enumerate(b.nodes)}
    best: dict[str, str] = {}
    for mname, tn in b.node_of.items():
        m = b.modules.get(mname)
        container = mname in b._expanded or (
            mname not in leaves and m is not None and any(True for _ in m.children())
        )
        if not container or mname == "" or tn not in ops:
            continue
        if the_sum(tn) and (tn not in best or len(mname) > len(best[tn])):
            best[tn] = mname
    blocks = tuple(best[tn] for tn in sorted(best, key=order.get))
    module_of: dict[str, str] = {}
    for mname, tn in b.node_of.items():  # the innermost module holding each node
        if tn not in module_of or len(mname) > len(module_of[tn]):
            module_of[tn] = mname
    parts = {}
    for mname in blocks:
        add = ops[the_sum(b.node_of[mname])]
        parts[mname] = tuple(module_of.get(i) for i in add.inputs)
    return blocks, parts
