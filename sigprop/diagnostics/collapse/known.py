"""Which torchvision architecture a state dict's key names belong to (for a hint only)."""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["guess_architecture"]

_RESNET = {
    ("basic", (2, 2, 2, 2)): "resnet18",
    ("basic", (3, 4, 6, 3)): "resnet34",
    ("bottleneck", (3, 4, 6, 3)): "resnet50",
    ("bottleneck", (3, 4, 23, 3)): "resnet101",
    ("bottleneck", (3, 8, 36, 3)): "resnet152",
}
_VGG = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}
_DENSENET = {
    (6, 12, 24, 16): "densenet121",
    (6, 12, 32, 32): "densenet169",
    (6, 12, 48, 32): "densenet201",
    (6, 12, 36, 24): "densenet161",
}


def _count(keys, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in keys if (m := rx.fullmatch(k))})


def guess_architecture(tensors: Mapping) -> str | None:
    """``"torchvision:resnet18"`` etc. when the keys are exactly one known family's."""
    ndim = {k.replace("_orig", ""): t.ndim for k, t in tensors.items() if not k.endswith("_mask")}
    keys = list(ndim)
    ks = set(keys)
    if {"conv1.weight", "bn1.weight", "fc.weight"} <= ks:
        blocks = tuple(_count(keys, rf"layer{i}\.(\d+)\.conv1\.weight") for i in range(1, 5))
        kind = "bottleneck" if "layer1.0.conv3.weight" in ks else "basic"
        name = _RESNET.get((kind, blocks))
        return f"torchvision:{name}" if name else None
    if "features.conv0.weight" in ks:
        blocks = tuple(
            _count(keys, rf"features\.denseblock{i}\.denselayer(\d+)\.conv1\.weight")
            for i in range(1, 5)
        )
        name = _DENSENET.get(blocks)
        return f"torchvision:{name}" if name else None
    if "classifier.6.weight" in ks:
        convs = [k for k in keys if re.fullmatch(r"features\.\d+\.weight", k)]
        convs = [k for k in convs if ndim[k] == 4]
        name = _VGG.get(len(convs))
        bn = any(k.endswith("running_mean") for k in keys)
        return f"torchvision:{name}{'_bn' if bn else ''}" if name else None
    if "features.18.0.weight" in ks and "classifier.1.weight" in ks:
        return "torchvision:mobilenet_v2"
    return None
