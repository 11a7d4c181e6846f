"""A state dict loaded into its architecture: ``load_checkpoint(path, arch="torchvision:resnet18")``.

:func:`load_arch` builds the architecture (:func:`sigprop.nn.arch.build_model`: random
weights, nothing downloaded) and loads the checkpoint's tensors into it strictly:
``torch.nn.utils.prune`` pairs ``<p>_orig``/``<p>_mask`` are re-created on the module
(``prune.identity``, then the saved mask and weight are loaded), plain state dicts (zeros
after ``prune.remove``) load as they are, and buffers that merely end in ``_mask`` (a
``causal_mask``) are ordinary buffers. Missing or unexpected keys and shape mismatches are
refused with the first few names. A classifier whose width differs from the builder's
default is rebuilt with ``num_classes`` read from the checkpoint.

:func:`with_arch` returns the :class:`~sigprop.io.Checkpoint` with that model as its
``module`` and a note saying where the graph came from; it is what ``load_checkpoint``'s
``arch=``, :func:`sigprop.diagnostics.check_collapse`'s ``arch=`` and the CLI's ``--arch``
use. torch is imported only here, when an architecture is asked for.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sigprop.io.records import CHAIN_NOTE, NAME_ORDER_NOTE
from sigprop.validate import InvalidInput

__all__ = ["load_arch", "with_arch"]

_SHOW = 5


def _few(names) -> str:
    names = sorted(names)
    more = f" (and {len(names) - _SHOW} more)" if len(names) > _SHOW else ""
    return ", ".join(repr(n) for n in names[:_SHOW]) + more


def _pruned_pairs(keys) -> list[str]:
    """``<p>`` for every ``<p>_orig`` with a ``<p>_mask`` (the torch.nn.utils.prune pair)."""
    ks = set(keys)
    return [k[: -len("_orig")] for k in keys if k.endswith("_orig") and k[:-5] + "_mask" in ks]


def _state_dict(ckpt: Any) -> dict:
    tensors = {k: t.load() for k, t in ckpt.tensors.items()}
    for p in _pruned_pairs(tensors):
        tensors.pop(p, None)  # the computed weight_orig * weight_mask, if it was saved
    return tensors


def _reparametrise(model, pairs: list[str]) -> None:
    import torch.nn.utils.prune as prune
    from torch import nn

    for p in pairs:
        path, _, leaf = p.rpartition(".")
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise InvalidInput(f"the architecture has no module {path!r} (for {p!r})") from None
        if not isinstance(getattr(module, leaf, None), nn.Parameter):
            raise InvalidInput(f"the architecture's {path!r} has no parameter {leaf!r}")
        prune.identity(module, leaf)


def _classes(model, sd: dict, mismatched: list[str]) -> int | None:
    """The checkpoint's class count when only the last weight layer's width differs."""
    from torch import nn

    last = None
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            last = name
    if last is None:
        return None
    allowed = {f"{last}.{p}" for p in ("weight", "weight_orig", "weight_mask", "bias")}
    if not mismatched or not set(mismatched) <= allowed:
        return None
    key = next(k for k in (f"{last}.weight_orig", f"{last}.weight") if k in sd)
    return int(sd[key].shape[0])


def _build(spec: str, sd: dict, meta: bool, **kwargs) -> tuple[Any, list[str]]:
    import torch

    from sigprop.nn.arch import build_model

    if meta:  # no random initialisation: every tensor is about to be replaced
        with torch.device("meta"):
            model = build_model(spec, **kwargs)
    else:
        model = build_model(spec, **kwargs)
    _reparametrise(model, _pruned_pairs(sd))
    own = model.state_dict()
    mismatched = [k for k in sd if k in own and tuple(own[k].shape) != tuple(sd[k].shape)]
    return model, mismatched


def _on_meta(model) -> bool:
    return any(t.is_meta for t in (*model.parameters(), *model.buffers()))


def _refresh_pruned(model) -> None:
    """``module.<p> = <p>_orig · <p>_mask`` for every ``torch.nn.utils.prune`` pair (what its
    forward pre-hook does), so the weight is the loaded one before any forward pass."""
    import torch.nn.utils.prune as prune

    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))


def load_arch(spec: str, ckpt: Any):
    """The ``nn.Module`` of ``spec`` holding the checkpoint's tensors, in eval mode (module
    doc); :class:`~sigprop.validate.InvalidInput` when the state dict does not fit.

    torchvision architectures are built on the meta device (no random initialisation of
    weights that are replaced anyway: 1.7 s of VGG-16's build) and given the checkpoint's
    tensors, cast to the architecture's dtypes, in contiguous copies; an architecture left
    with a tensor the state dict does not hold (a non-persistent buffer), and any other
    source, is built normally and loaded by copy.
    """
    import torch

    from sigprop.nn.arch import parse_arch_spec

    sd = _state_dict(ckpt)
    meta = parse_arch_spec(spec)[0] == "torchvision"
    model, mismatched = _build(spec, sd, meta)
    classes = _classes(model, sd, mismatched)
    kwargs = {} if classes is None else {"num_classes": classes}
    if kwargs:
        model, mismatched = _build(spec, sd, meta, **kwargs)
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"missing keys {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_few(unexpected)}")
        if mismatched:
            shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched]
            parts.append(f"shape mismatches {_few(shapes)}")
        raise InvalidInput(f"the checkpoint does not fit {spec}: " + "; ".join(parts))
    with torch.no_grad():
        if meta:
            # copies (one memcpy of the weights): a Checkpoint built from a live module hands
            # out that module's own tensors, which the new model must not share
            fitted = {
                k: sd[k].to(dtype=own[k].dtype, copy=True, memory_format=torch.contiguous_format)
                for k in own
            }
            model.load_state_dict(fitted, strict=True, assign=True)
            if _on_meta(model):
                model, _ = _build(spec, sd, False, **kwargs)
                meta = False
        if not meta:
            model.load_state_dict(sd, strict=True)
        _refresh_pruned(model)
    model.eval()
    return model


def with_arch(ckpt: Any, spec: str) -> Any:
    """``ckpt`` with ``module`` the architecture ``spec`` holding its tensors (:func:`load_arch`)
    and ``arch`` set to ``spec``; the notes on a layer order inferred from key order and names
    give way to one naming the graph's origin. A checkpoint loaded with this ``arch`` already is returned
    as it is."""
    spec = spec.strip()
    if getattr(ckpt, "arch", None) == spec and ckpt.module is not None:
        return ckpt
    model = load_arch(spec, ckpt)
    notes = [n for n in ckpt.notes if n not in (CHAIN_NOTE, NAME_ORDER_NOTE)]
    notes.append(
        f"graph from the architecture {spec}, built with random weights (nothing downloaded), "
        "holding the file's tensors"
    )
    return dataclasses.replace(ckpt, module=model, arch=spec, notes=tuple(notes))
