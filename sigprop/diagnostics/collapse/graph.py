"""The skeleton of connectivity: weight layers and the graph of sites they join."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sigprop.validate import InvalidInput

__all__ = ["ConnectivityGraph", "WeightLayer"]


@dataclass(frozen=True)
class WeightLayer:
    """One weight layer as seen by the connectivity analysis.

    Attributes
    ----------
    name:
        the layer's name (module path such as ``"features.0"``).
    weight:
        the weight, shape ``(out, in/groups, *kernel)``: a torch tensor, a numpy array, or
        a lazy tensor from :mod:`sigprop.io` (anything with ``shape`` and
        ``iter_rows(rows)``). ``None`` when only the mask is known.
    mask:
        0/1 mask of the weight's shape, or ``None``: then a weight is kept iff it is
        nonzero (the state after ``torch.nn.utils.prune.remove``).
    groups:
        convolution groups (output channel block ``g`` sees input channel block ``g``).
    offset:
        optional ``(out, in_channels)`` boolean connectivity of a dense, unmasked offset
        added to the layer (the DCT of DCT-plus-sparse layers, arXiv 2102.07655 Sec. 3):
        those edges connect units but are not counted as weights.
    """

    name: str
    weight: Any
    mask: Any = None
    groups: int = 1
    offset: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        source = self.weight if self.weight is not None else self.mask
        if source is None:
            raise InvalidInput(f"layer {self.name!r}: neither a weight nor a mask was given")
        return tuple(int(s) for s in source.shape)


class ConnectivityGraph:
    """A directed acyclic graph of *sites* (groups of units) joined by weight layers and
    unit-wise links; the skeleton on which reachability is computed.

    Build it in topological order: every operation creates its output site after its
    inputs. ``input()`` opens an input site; ``layer(w, src)`` applies a weight layer and
    returns its output site; ``add(*sites)`` joins summands unit by unit (a residual
    connection); ``concat(*sites)`` stacks sites along the unit axis; ``flatten(site)``
    marks that a following linear layer may see several features per unit; and
    ``output(site)`` marks an output. Widths are read from the weight shapes (an input's
    width from the first layer that reads it).
    """

    def __init__(self, *, lenient: bool = False) -> None:
        #: ``lenient``: a width mismatch while building is recorded (:meth:`resolve` returns
        #: it) instead of raised, for mappers that fall back to another graph
        self._lenient = lenient
        self._problem: str | None = None
        self._parent: list[int] = []  # union-find over sites of equal width
        self._width: list[int | None] = []
        self._flat: list[bool] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        #: (layer, src, dst); the layer's flatten group size is resolved in ``finalize``.
        self.layers: list[tuple[WeightLayer, int, int]] = []
        #: (src, dst, offset): dst units [offset, offset + width(src)) copy src's units.
        self.links: list[tuple[int, int, int]] = []
        self._pending_linear: list[tuple[int, int, int]] = []  # (layer index, site, in_features)
        #: (src, dst, matrix): fixed boolean connectivity ``matrix[dst_unit, src_unit]`` that
        #: carries no weights (attention's head mixing, a norm scale with zeros)
        self.mixes: list[tuple[int, int, np.ndarray]] = []

    # ----- sites
    def _new_site(self, width: int | None = None, flat: bool = False) -> int:
        self._parent.append(len(self._parent))
        self._width.append(width)
        self._flat.append(flat)
        return len(self._parent) - 1

    def _find(self, s: int) -> int:
        while self._parent[s] != s:
            self._parent[s] = self._parent[self._parent[s]]
            s = self._parent[s]
        return s

    def _unify(self, a: int, b: int, what: str) -> None:
        ra, rb = self._find(a), self._find(b)
        if ra == rb:
            return
        wa, wb = self._width[ra], self._width[rb]
        if wa is not None and wb is not None and wa != wb:
            self._fail(f"{what}: widths {wa} and {wb} do not match")
            return
        self._parent[rb] = ra
        self._width[ra] = wa if wa is not None else wb

    def _set_width(self, s: int, width: int, what: str) -> None:
        r = self._find(s)
        if self._width[r] is None:
            self._width[r] = width
        elif self._width[r] != width:
            self._fail(f"{what}: expects {width} input units, its input has {self._width[r]}")

    def _fail(self, problem: str) -> None:
        if not self._lenient:
            raise InvalidInput(problem)
        if self._problem is None:
            self._problem = problem

    def is_flat(self, s: int) -> bool:
        """Whether ``s`` is a flattened site (a linear layer may read several features per
        unit)."""
        return self._flat[s]

    def width(self, s: int) -> int | None:
        return self._width[self._find(s)]

    @property
    def n_sites(self) -> int:
        return len(self._parent)

    # ----- building
    def input(self, width: int | None = None) -> int:
        s = self._new_site(width)
        self.inputs.append(s)
        return s

    def output(self, site: int) -> None:
        self._check_site(site)
        self.outputs.append(site)

    def _check_site(self, s: int) -> None:
        if not (isinstance(s, int) and 0 <= s < self.n_sites):
            raise InvalidInput(f"unknown site {s!r}")

    def layer(self, layer: WeightLayer, src: int) -> int:
        """Apply a weight layer to ``src`` and return its output site."""
        self._check_site(src)
        shape = layer.shape
        if len(shape) < 2:
            raise InvalidInput(f"layer {layer.name!r}: a weight needs >= 2 dims, got shape {shape}")
        if layer.groups < 1 or shape[0] % layer.groups:
            raise InvalidInput(f"layer {layer.name!r}: {shape[0]} outputs not divisible by groups")
        dst = self._new_site(shape[0])
        index = len(self.layers)
        self.layers.append((layer, src, dst))
        if len(shape) == 2 and layer.groups == 1 and self._flat[src]:
            self._pending_linear.append((index, src, shape[1]))
        else:
            self._set_width(src, shape[1] * layer.groups, f"layer {layer.name!r}")
        return dst

    def add(self, *sites: int) -> int:
        """Unit-wise join (residual addition, gating product) of equally wide sites."""
        if not sites:
            raise InvalidInput("add() needs at least one site")
        for s in sites:
            self._check_site(s)
        dst = self._new_site(flat=all(self._flat[s] for s in sites))
        for s in sites:
            self._unify(dst, s, "residual addition")
            self.links.append((s, dst, 0))
        return dst

    def flatten(self, site: int) -> int:
        """Flatten spatial dimensions: channel-level identity, feature grouping allowed."""
        self._check_site(site)
        dst = self._new_site(flat=True)
        self._unify(dst, site, "flatten")
        self.links.append((site, dst, 0))
        return dst

    def concat(self, *sites: int) -> int:
        """Concatenate sites along the unit (channel) axis."""
        widths = [self.width(s) for s in sites]
        if any(w is None for w in widths):
            self._fail("concat(): the width of every input must be known")
            widths = [w or 0 for w in widths]
        dst = self._new_site(sum(widths))
        offset = 0
        for s, w in zip(sites, widths):
            self.links.append((s, dst, offset))
            offset += w
        return dst

    def mix(self, site: int, matrix: np.ndarray) -> int:
        """Fixed connectivity without weights: output unit ``o`` reads input unit ``i`` iff
        ``matrix[o, i]`` (a per-unit gate is a diagonal matrix)."""
        self._check_site(site)
        matrix = np.asarray(matrix, dtype=bool)
        if matrix.ndim != 2:
            raise InvalidInput(f"mix(): connectivity must be a matrix, got shape {matrix.shape}")
        self._set_width(site, matrix.shape[1], "mix()")
        dst = self._new_site(matrix.shape[0])
        self.mixes.append((site, dst, matrix))
        return dst

    def gate(self, site: int, keep: np.ndarray) -> int:
        """Units with ``keep`` False are cut (a normalisation scale ``gamma = 0``)."""
        return self.mix(site, np.diag(np.asarray(keep, dtype=bool)))

    def resolve(self) -> tuple[list[int], str | None]:
        """Resolve widths and flatten groups without raising: ``(group size of every layer,
        None)``, or ``(..., reason)`` when the graph is not complete or consistent."""
        groups = [1] * len(self.layers)
        if self._problem is not None:
            return groups, self._problem
        for index, site, in_features in self._pending_linear:
            name = self.layers[index][0].name
            w = self.width(site)
            if w is None:
                r = self._find(site)
                self._width[r] = in_features
            elif in_features % w:
                return groups, (
                    f"layer {name!r}: {in_features} input features are not a whole number of "
                    f"features per channel for a flattened input of {w} channels"
                )
            else:
                groups[index] = in_features // w
        for s in range(self.n_sites):
            if self.width(s) is None:
                return groups, f"could not determine the width of site {s} (no layer reads it)"
        if not self.layers:
            return groups, "the network has no weight layers"
        if not self.inputs or not self.outputs:
            return groups, "the graph needs at least one input and one output"
        return groups, None

    def finalize(self) -> list[int]:
        """Resolve widths and flatten groups; returns the group size of every layer.
        Raises ``InvalidInput`` where :meth:`resolve` finds a problem."""
        groups, problem = self.resolve()
        if problem is not None:
            raise InvalidInput(problem)
        return groups
