"""What :func:`sigprop.io.load_checkpoint` returns: the checkpoint and its weight layers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sigprop._json import to_jsonable
from sigprop.io.lazy import LazyTensor, validate_values
from sigprop.io.source import printable

__all__ = ["Checkpoint", "LayerEntry", "LayerTensors"]


#: the notes of a layer order inferred without a graph; a graph (``arch=``) replaces them
CHAIN_NOTE = "inferred the layer chain from key order and shapes"
NAME_ORDER_NOTE = "safetensors stores no module order: layers taken in natural order of their names"


@dataclass(frozen=True)
class LayerEntry:
    """A weight layer found in a checkpoint.

    Attributes
    ----------
    name:
        module path (``"features.0"``).
    weight_key:
        key of the weight (``<name>.weight``, or ``<name>.weight_orig`` in the
        ``torch.nn.utils.prune`` format).
    mask_key:
        key of the 0/1 mask, or ``None`` (then a weight is kept iff it is nonzero).
    shape:
        weight shape ``(out, in, *kernel)``.
    mask_source:
        ``"torch.nn.utils.prune"``, ``"weight_mask"`` or ``"nonzero weights"``.
    alpha_key:
        key of a DCT-plus-sparse offset scale, or ``None``.
    """

    name: str
    weight_key: str
    mask_key: str | None
    shape: tuple[int, ...]
    mask_source: str
    alpha_key: str | None = None

    def to_dict(self) -> dict:
        return to_jsonable(self, "LayerEntry")


@dataclass(frozen=True)
class LayerTensors:
    """The tensors of one weight layer, ready for a connectivity scan.

    ``weight`` and ``mask`` (``None``: a weight is kept iff nonzero) are
    :class:`~sigprop.io.LazyTensor` objects; ``dct_offset`` says that a DCT-plus-sparse
    layer's dense DCT offset is switched on (its ``alpha`` is nonzero), so the layer
    connects every unit pair the DCT pattern connects whatever its mask (Price & Tanner,
    arXiv 2102.07655, Sec. 3). :func:`sigprop.diagnostics.check_collapse` turns these into
    its own layer objects.
    """

    name: str
    weight: LazyTensor
    mask: LazyTensor | None
    shape: tuple[int, ...]
    dct_offset: bool = False


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint read by :func:`~sigprop.io.load_checkpoint`.

    Attributes
    ----------
    path:
        the file read.
    format:
        ``"torch.save"``, ``"torch.save (legacy)"``, ``"safetensors"``, ``"torch.export"`` or
        ``"pickled nn.Module"`` (only with ``trust_pickle=True``).
    layout:
        ``"torch.nn.utils.prune"``, ``"weight_mask"``, ``"plain"`` (no masks) or
        ``"mixed"``.
    tensors:
        every tensor of the (unwrapped) state dict by key, as :class:`LazyTensor`.
    layers:
        the weight layers found, in file order (natural name order for safetensors).
    masks:
        keys of the masks found.
    notes:
        what was inferred, e.g. how the layer chain was obtained.
    wrapper_key:
        the key the state dict was found under (``"state_dict"``, ...), or ``None``.
    module:
        the unpickled ``nn.Module`` (``trust_pickle=True``), the architecture built and
        holding the file's tensors (``arch=``, :mod:`sigprop.io.arch`), else ``None``.
    exported:
        the graph of a ``.pt2`` file: an :class:`~sigprop.io.export.ExportedGraph` read
        from the archive's JSON (or, for a trusted archive that needed unpickling, the
        ``torch.export.ExportedProgram``), else ``None``.
    arch:
        the architecture spec ``module`` was built from (``arch=``), else ``None``.
    """

    path: str
    format: str
    layout: str
    tensors: Mapping[str, LazyTensor]
    layers: tuple[LayerEntry, ...]
    masks: tuple[str, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)
    wrapper_key: str | None = None
    module: Any = None
    exported: Any = None
    arch: str | None = None

    def layer_tensors(self) -> list[LayerTensors]:
        """The layers with their tensors, in :attr:`layers` order."""
        out = []
        for entry in self.layers:
            offset = False
            if entry.alpha_key is not None:
                alpha = self.tensors[entry.alpha_key].load_array()
                offset = float(np.abs(alpha).max()) != 0.0
            out.append(
                LayerTensors(
                    entry.name,
                    self.tensors[entry.weight_key],
                    self.tensors[entry.mask_key] if entry.mask_key else None,
                    entry.shape,
                    offset,
                )
            )
        return out

    def validate_values(self, *, skip_layers: bool = False) -> None:
        """Stream the tensors: floats must be finite and masks 0/1 (``CheckpointError``).

        ``skip_layers=True`` leaves out the layers' weights and masks, for a consumer such
        as :func:`sigprop.diagnostics.check_collapse` that validates them while scanning.
        """
        skip: set[str] = set()
        if skip_layers:
            for entry in self.layers:
                skip.add(entry.weight_key)
                if entry.mask_key:
                    skip.add(entry.mask_key)
        validate_values(printable(self.path), self.tensors, set(self.masks), frozenset(skip))

    def to_dict(self) -> dict:
        return to_jsonable(
            {
                "path": self.path,
                "format": self.format,
                "layout": self.layout,
                "n_tensors": len(self.tensors),
                "layers": [entry.to_dict() for entry in self.layers],
                "masks": list(self.masks),
                "notes": list(self.notes),
                "wrapper_key": self.wrapper_key,
                "arch": self.arch,
            },
            "Checkpoint",
        )
