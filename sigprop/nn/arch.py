"""Architectures by name: ``torchvision:NAME``, ``timm:NAME`` or ``module.path:factory``.

:func:`build_model` builds an architecture with random initial weights and never downloads
anything (torchvision's ``weights=None``, timm's ``pretrained=False``). It is what
``sigprop spp MODEL`` and ``sigprop check --arch SPEC`` use.

torchvision without its C extension
-----------------------------------
``import torchvision`` loads a compiled extension and then registers fake (meta) kernels for
its detection operators. Where the extension cannot load — a torchvision wheel built for
CUDA next to a CPU-only torch, the usual mismatch when torch is installed from a CPU index
and torchvision from the default one — that registration fails with "operator
torchvision::nms does not exist" and the whole import fails, although the model builders
are pure Python. :func:`import_torchvision` then declares the schemas of the operators that
torchvision registers unconditionally (``nms`` and ``qnms``, the same signatures as the
extension's) and imports it again: every model builder works; the detection operators
themselves (only used by detection models' post-processing) raise torch's "no kernel"
error if called. Nothing is patched when the extension loads.

``module.path:factory`` imports a Python module: it is for the user's own code, typed by the
user; it is never read from a file or a config (a checkpoint names no code to run).
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from typing import Any

from torch import nn

from sigprop.validate import InvalidInput, InvalidType

__all__ = ["build_model", "import_torchvision", "parse_arch_spec"]

#: Operators that torchvision's ``_meta_registrations`` registers fake kernels for without
#: first checking that its extension loaded, with their schemas (torchvision/csrc/ops/nms.cpp).
_UNCONDITIONAL_OPS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_MISSING_OP = re.compile(r"operator torchvision::(\w+) does not exist")
_SCHEMA_LIBS: list = []  # keeps the fragment libraries alive for the process

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MODULE_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def import_torchvision():
    """``import torchvision``, also where its C extension cannot load (see the module doc)."""
    try:
        import torchvision
    except ModuleNotFoundError:
        raise InvalidInput(
            "torchvision is not installed: pip install --no-deps torchvision "
            "(the version that pairs with your torch)"
        ) from None
    except RuntimeError as exc:
        import torch

        declared = set()
        while True:
            match = _MISSING_OP.search(str(exc))
            if match is None or match[1] not in _UNCONDITIONAL_OPS or match[1] in declared:
                raise InvalidInput(f"torchvision cannot be imported: {exc}") from None
            for name in [
                m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")
            ]:
                del sys.modules[name]
            lib = torch.library.Library("torchvision", "FRAGMENT")
            lib.define(_UNCONDITIONAL_OPS[match[1]])
            _SCHEMA_LIBS.append(lib)
            declared.add(match[1])
            try:
                import torchvision
            except RuntimeError as again:
                exc = again
                continue
            break
    return torchvision


def parse_arch_spec(spec: Any) -> tuple[str, str]:
    """Split ``"torchvision:resnet18"`` into ``("torchvision", "resnet18")``; the source is
    ``torchvision``, ``timm`` or a dotted module path (then the name is its factory)."""
    if not isinstance(spec, str):
        raise InvalidType(f"an architecture is a string like 'torchvision:resnet18', got {spec!r}")
    source, sep, name = spec.strip().partition(":")
    if not sep or not _NAME.fullmatch(name) or not _MODULE_PATH.fullmatch(source):
        raise InvalidInput(
            f"architecture {spec!r} is not of the form torchvision:NAME, timm:NAME or "
            "module.path:factory"
        )
    return source, name


def build_model(spec: str, **kwargs: Any) -> nn.Module:
    """Build the architecture ``spec`` with random weights (nothing is downloaded).

    ``kwargs`` go to the builder (``num_classes=10``, timm's ``img_size=32``, ...).
    """
    source, name = parse_arch_spec(spec)
    if source == "torchvision":
        tv = import_torchvision()
        try:
            builder = tv.models.get_model_builder(name)
        except ValueError:
            raise InvalidInput(
                f"torchvision has no model {name!r} (see torchvision.models.list_models())"
            ) from None
        if "weights" in inspect.signature(builder).parameters:
            kwargs["weights"] = None
        model = builder(**kwargs)
    elif source == "timm":
        import_torchvision()  # timm imports torchvision; make that import work first
        try:
            import timm
        except ModuleNotFoundError:
            raise InvalidInput("timm is not installed: pip install --no-deps timm") from None
        if not timm.is_model(name):
            raise InvalidInput(f"timm has no model {name!r} (see timm.list_models())")
        model = timm.create_model(name, pretrained=False, **kwargs)
    else:
        try:
            module = importlib.import_module(source)
        except ImportError as exc:
            raise InvalidInput(
                f"cannot import {source!r} for architecture {spec!r}: {exc} (the module must be "
                "importable from the current directory or PYTHONPATH)"
            ) from None
        factory = getattr(module, name, None)
        if not callable(factory):
            raise InvalidInput(f"{source}.{name} is not a callable model factory")
        model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise InvalidInput(f"{spec} built a {type(model).__name__}, not a torch.nn.Module")
    return model
