"""sigprop.plotting (see docs/architecture.md)."""

from sigprop.plotting.spp import plot_signal_propagation, signal_propagation_records

__all__ = ["plot_signal_propagation", "signal_propagation_records"]
