"""sigprop: will signal flow through this sparse network? Theory and experiment side by side.

Subpackages
-----------
``sigprop.theory``       mean-field theory, free-probability spectra, pruned-layer theory (no torch)
``sigprop.nn``           masked and DCT-plus-sparse layers, EOC initialisation, model builders,
                         the one training loop (``sigprop.nn.loop``)
``sigprop.prune``        pruning at initialisation and dynamic sparse reparameterisation
``sigprop.diagnostics``  describe / predict / measure / compare, Jacobian spectra, layer collapse
``sigprop.watcher``      ``sigprop.watch``: per-layer statistics in the user's own training loop
``sigprop.experiments``  data that ships with the install, training runs, sweeps
``sigprop.io``           safe model loading

Subpackages are imported lazily, so ``import sigprop.theory`` never imports torch;
``sigprop.watch`` and ``sigprop.Watcher`` import torch on first use.
"""

__version__ = "0.1.0"

#: Names resolved on first access (``sigprop.watch(...)``), with the module that has them.
_LAZY = {"watch": "sigprop.watcher", "Watcher": "sigprop.watcher"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sigprop' has no attribute {name!r}")
