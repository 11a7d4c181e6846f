"""Integrations of :func:`sigprop.watch` with training frameworks (optional extras).

* :mod:`sigprop.integrations.lightning`: ``SigpropCallback``, a Lightning callback
  (``pip install 'sigprop[lightning]'``).

Each module imports its framework when it is imported; ``import sigprop.integrations``
alone imports nothing.
"""
