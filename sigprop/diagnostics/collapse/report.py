"""What :func:`~sigprop.diagnostics.collapse.check_collapse` returns."""

from __future__ import annotations

from dataclasses import dataclass, field

from sigprop._json import to_jsonable

__all__ = ["CollapseReport", "LayerCollapse"]


@dataclass(frozen=True)
class LayerCollapse:
    """Connectivity of one weight layer.

    Attributes
    ----------
    name, kind, shape:
        layer name; ``"linear"``, ``"conv1d"``, ``"conv2d"`` or ``"conv3d"``; weight shape.
    total, kept, effective_kept:
        number of weights; weights kept by the mask; kept weights on an input-output path.
    density, effective_density:
        ``kept/total`` and ``effective_kept/total``.
    collapsed:
        every weight of the layer is pruned (``kept == 0``): layer collapse in the sense of
        Tanaka et al. (arXiv 2006.05467, Sec. 3).
    effectively_collapsed:
        no kept weight of the layer lies on an input-output path.
    units:
        number of output units (features, or channels for a convolution).
    dead_in, dead_out:
        indices of output units with no way in (no path from the input) and with no way
        out (no path to the output).
    has_offset:
        a dense offset (DCT-plus-sparse) connects the layer independently of its mask.
    constant_channels:
        output units with no way in that still emit a nonzero constant (a bias, or the
        ``beta`` of the batch norm that follows): no information, but not zero.
    bypassed, block:
        the layer is collapsed (or effectively collapsed) while a parallel path keeps the
        network connected; ``block`` names the module whose output joins the two paths (the
        residual block).
    channel_effective_kept:
        the channel-level count (an upper bound on ``effective_kept``) when
        ``effective_kept`` is the exact weight-level one, else ``None``.
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    total: int
    kept: int
    effective_kept: int
    density: float
    effective_density: float
    collapsed: bool
    effectively_collapsed: bool
    units: int
    dead_in: tuple[int, ...]
    dead_out: tuple[int, ...]
    has_offset: bool = False
    constant_channels: tuple[int, ...] = ()
    bypassed: bool = False
    block: str | None = None
    channel_effective_kept: int | None = None

    @property
    def n_dead(self) -> int:
        """Number of output units with no way in or no way out."""
        return len(set(self.dead_in) | set(self.dead_out))

    def to_dict(self) -> dict:
        """The fields plus ``n_dead``."""
        return {**to_jsonable(self, "LayerCollapse"), "n_dead": self.n_dead}


@dataclass(frozen=True)
class CollapseReport:
    """Layer collapse and effective sparsity of a pruned network.

    Attributes
    ----------
    layers:
        one :class:`LayerCollapse` per weight layer, in graph order.
    total, kept:
        weights over all layers, and those kept.
    sparsity:
        ``1 - kept/total`` (fraction of weights removed).
    effective_kept, effective_sparsity:
        kept weights on an input-output path, and ``1 - effective_kept/total``
        (Vysogorets & Kempe, arXiv 2107.02306, Sec. 3). ``None`` when no graph could be
        built (see ``notes``).
    collapsed_layers:
        names of layers with every weight pruned.
    effectively_collapsed_layers:
        names of layers none of whose kept weights lies on an input-output path.
    connected:
        whether some path joins an input unit to an output unit (``None`` without graph).
    input_units, dead_inputs:
        number of input units, and indices of those with no way out.
    graph:
        how the graph was obtained: ``"fx"``, ``"export"``, ``"chain"``, ``"explicit"``
        or ``"none"``.
    notes:
        what was inferred or could not be mapped.
    bypassed_layers, skips:
        collapsed layers whose block is bypassed by a parallel path, and the paths that
        bypass them (``"<block>: skip <names>"``).
    effective_exact:
        ``effective_kept`` is the exact weight-level count for ``input_shape`` (else the
        channel-level count, an upper bound on it).
    channel_effective_kept, channel_effective_sparsity:
        the channel-level count and its effective sparsity, a lower bound on the exact one.
    probe:
        the measured forward pass (``check_collapse(probe=True)``), else ``None``.
    """

    layers: tuple[LayerCollapse, ...]
    total: int
    kept: int
    sparsity: float
    effective_kept: int | None
    effective_sparsity: float | None
    collapsed_layers: tuple[str, ...]
    effectively_collapsed_layers: tuple[str, ...]
    connected: bool | None
    input_units: int | None
    dead_inputs: tuple[int, ...]
    graph: str
    notes: tuple[str, ...] = field(default_factory=tuple)
    bypassed_layers: tuple[str, ...] = ()
    skips: tuple[str, ...] = ()
    effective_exact: bool = False
    channel_effective_kept: int | None = None
    input_shape: tuple[int, ...] | None = None
    probe: dict | None = None

    @property
    def channel_effective_sparsity(self) -> float | None:
        """Effective sparsity at channel level: a lower bound on the exact one."""
        kept = (
            self.effective_kept
            if self.channel_effective_kept is None
            else (self.channel_effective_kept)
        )
        return None if kept is None else 1.0 - kept / self.total

    @property
    def verdict(self) -> str:
        """``"healthy"``, ``"disconnected"`` (no input-output path), ``"collapsed but
        bypassed"`` (collapsed layers inside blocks a parallel path keeps connected),
        ``"layer collapse"``, ``"input-independent"`` (connected, but the probe measured an
        output that does not depend on the input) or ``"connectivity unknown"``."""
        if self.connected is False:
            return "disconnected"
        failed = self.collapsed_layers or self.effectively_collapsed_layers
        if self.connected is None:
            return "layer collapse" if failed else "connectivity unknown"
        if failed:
            return "collapsed but bypassed"
        if self.probe is not None and self.probe.get("input_independent"):
            return "input-independent"
        return "healthy"

    def with_notes(self, *notes: str) -> CollapseReport:
        import dataclasses

        return dataclasses.replace(self, notes=self.notes + tuple(notes))

    @property
    def n_dead_units(self) -> int:
        """Hidden and output units (outputs of weight layers) with no way in or no way out."""
        return sum(layer.n_dead for layer in self.layers)

    @property
    def healthy(self) -> bool:
        """No layer collapsed (directly or effectively), the input reaches the output, and
        connectivity was checked at all (:attr:`verdict` is ``"healthy"``)."""
        return self.verdict == "healthy"

    def to_dict(self) -> dict:
        """The fields (``layers`` through :meth:`LayerCollapse.to_dict`) plus the computed
        ``n_dead_units``, ``healthy``, ``verdict``, ``channel_effective_sparsity`` and
        ``connectivity_checked``."""
        out = to_jsonable(self, "CollapseReport")
        out["layers"] = [layer.to_dict() for layer in self.layers]
        computed = {
            "n_dead_units": self.n_dead_units,
            "healthy": self.healthy,
            "verdict": self.verdict,
            "channel_effective_sparsity": self.channel_effective_sparsity,
            "connectivity_checked": self.connected is not None,
        }
        out.update(to_jsonable(computed, "CollapseReport"))
        return out
