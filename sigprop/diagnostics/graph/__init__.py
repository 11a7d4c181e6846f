"""The computation graph of a torch model, captured once for every consumer.

``capture`` traces a model (torch.fx) into a :class:`CapturedGraph` whose nodes carry one
*kind* from a closed vocabulary; describe/predict, measure and the collapse checker read
models through it. See ``capture.py`` for the tracing policy.
"""

from sigprop.diagnostics.graph.capture import KINDS, CapturedGraph, GraphNode, capture

__all__ = ["KINDS", "CapturedGraph", "GraphNode", "capture"]
