"""A state dict checked with its architecture's real graph: ``arch="torchvision:resnet18"``.

The model is built and the checkpoint's tensors are loaded into it strictly by
:func:`sigprop.io.arch.with_arch` (the io layer's one definition, also behind
``load_checkpoint(..., arch=)`` and the CLI's ``--arch``); the check then follows the
model's traced graph. :func:`default_shape` is the input shape that check uses when none
is given: the architecture's own (timm's ``input_size``), ``(C, 224, 224)`` for a
torchvision image model, the width of a linear first layer, else none (a spatial size or a
sequence length would be a guess).
"""

from __future__ import annotations

from typing import Any

__all__ = ["default_shape"]


def default_shape(spec: str, model: Any) -> tuple[int, ...] | None:
    """The per-sample input shape of the architecture ``spec`` built as ``model`` (module doc)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, dict) and cfg.get("input_size"):
        return tuple(int(d) for d in cfg["input_size"])
    from sigprop.diagnostics.collapse.from_fx import default_input_shape

    first = default_input_shape(model)
    if spec.startswith("torchvision:") and first is not None and len(first) == 3:
        return (first[0], 224, 224)  # torchvision's image models
    if first is not None and len(first) == 1:
        return first  # a linear first layer fixes the input shape
    return None  # a spatial size or a sequence length would be a guess: --input-shape
