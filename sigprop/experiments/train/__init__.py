"""Full training runs for every experiment in sigprop.

:func:`train` trains any ``nn.Module`` on a :class:`~sigprop.experiments.data.Dataset` with
SGD or Adam and an optional learning-rate schedule, keeps pruned weights at exactly zero,
drives a dynamic-sparsity component (DSR), feeds recorders and callbacks (a
``sigprop.watch`` watcher, for one), shows a tqdm bar, and returns a frozen
:class:`TrainResult`. Its steps are those of the one training loop of the package,
:func:`sigprop.nn.loop.fit`; everything :func:`train` adds (shuffling, the epoch statistics
and evaluation, the schedule, the bar, DSR) is a callback of that loop.

Reproducibility
---------------
The shuffling order comes from a local ``torch.Generator`` seeded from ``seed``; anything
that draws from torch's *global* generator inside the model (dropout) runs inside
``torch.random.fork_rng`` seeded from ``seed`` as well, so the caller's global random state is
the same after :func:`train` as before it. On the CPU two calls with the same model state,
data, settings and ``seed`` give bit-identical numbers (with the same number of torch
threads; ``torch.use_deterministic_algorithms`` is global state and is left to the caller —
set it yourself for CUDA).

Masks
-----
Every module with a ``weight_mask`` buffer (``sigprop.nn.prunable.masked_modules``: sigprop's
masked and DCT-plus-sparse layers, or anything following that convention) is stepped with
``sigprop.nn.prunable.masked_step_`` — pruned gradients zeroed, optimiser step, mask
re-applied (its own ``apply_mask_()`` when it has one, else pruned weights set to 0) — so
neither momentum nor weight decay can revive a pruned weight.

Divergence
----------
A non-finite training loss stops the run: the result has ``diverged=True``, the step in
``diverged_at``, and the metrics of the epochs completed before it. Nothing is raised.
"""

from sigprop.experiments.train.evaluate import evaluate
from sigprop.experiments.train.loop import OPTIMIZERS, SCHEDULES, train
from sigprop.experiments.train.result import TrainResult

__all__ = ["OPTIMIZERS", "SCHEDULES", "TrainResult", "evaluate", "train"]
