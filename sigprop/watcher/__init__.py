"""``sigprop.watch``: signal-propagation statistics of any model, in the user's own training.

* :func:`watch` / :class:`Watcher` (:mod:`~sigprop.watcher.core`): hooks on any model that
  record per-layer gradient norms, weight norms, pre-activation second moments q^l and
  densities every N steps, model-level collapse when masks change, and the theory's
  predictions at step 0;
* :mod:`~sigprop.watcher.log`: the JSON Lines log (crash-safe appends, resume) and its
  bounded reader :func:`read_log`;
* :mod:`~sigprop.watcher.tensorboard`: the same numbers as TensorBoard events;
* :mod:`~sigprop.watcher.layers`: what is measured on each weight layer, in every mask
  format.

The package is named ``watcher`` so that ``sigprop.watch`` stays the function (a module of
that name would replace it as an attribute of ``sigprop`` once imported). It sits above
``sigprop.diagnostics`` (the collapse check) and below ``sigprop.plotting`` and
``sigprop.experiments`` (whose recorders are adapters over it).
"""

from sigprop.watcher.core import Record, Watcher, watch
from sigprop.watcher.log import LOG_NAME, QUANTITIES, WatchLog, read_log

__all__ = ["LOG_NAME", "QUANTITIES", "Record", "WatchLog", "Watcher", "read_log", "watch"]
