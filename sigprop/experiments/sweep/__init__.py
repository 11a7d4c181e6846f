"""Grids of runs — local processes by default, a Dask cluster on request — resumable.

A :class:`Sweep` is a registered run (:data:`sigprop.experiments.runs.RUNS`), a ``grid`` of
parameter lists whose Cartesian product gives the runs, and ``fixed`` parameters shared by
all. Write it in Python::

    Sweep(run="train_pruned", grid={"method": ["snip", "synflow"], "density": [0.1, 0.01],
          "seed": [0, 1]}, fixed={"dataset": "digits", "epochs": 5})

or as a small TOML file (``examples/sweep.toml``)::

    run = "train_pruned"
    summary = ["final_test_accuracy"]      # optional: result columns of the summary table
    [fixed]
    dataset = "digits"
    [grid]
    method = ["snip", "synflow"]
    density = [0.1, 0.01]

A ``"package.module:function"`` run is imported and called only with ``allow_import=True``
(``sigprop sweep --allow-import``): with it, a config is code.

:func:`run_sweep` executes the runs not yet in the results file and appends one JSON line
per run. Guarantees:

* **Hostile configs are refused** with :class:`~sigprop.validate.InvalidInput` before
  anything runs: size, nesting, types of every field, grid size (``config``, ``grid``).
* **Atomic rows.** One complete line per ``write`` on a regular file opened in append mode,
  under an exclusive ``flock``, ``fsync``-ed; a torn last line is repaired, and a file that
  is not a results file is refused, never truncated (``store``).
* **Each point once, even with two writers.** A point is claimed under the lock before it
  runs; a crashed driver's claims are freed by the kernel releasing its lock (``claims``).
* **Resume.** Each run has a key, the hash of its run name and parameters
  (:func:`run_key`; NaN and ±inf included, ``keys``); a key already in the file is not run
  again (failed runs too, unless ``retry_failed=True``). Interrupting a sweep (Ctrl-C, a
  killed process, a lost cluster) and starting it again completes it without duplicated or
  lost rows; local worker processes die with their driver (``local``).
* **Failures are rows.** An exception inside a run becomes a row with ``status="error"`` and
  its type, message and traceback; the other runs go on. (``KeyboardInterrupt`` and
  ``SystemExit`` are not caught: they stop the sweep.)

Row format::

    {"key": ..., "run": ..., "params": {...}, "status": "ok" | "error",
     "result": {...} | null, "error": {"type", "message", "traceback"} | null,
     "wall_time": seconds, "worker": "host:pid", "finished": ISO-8601 UTC}

Executors: ``workers=N`` local processes (``concurrent.futures.ProcessPoolExecutor``, spawn
start method, ``torch_threads`` torch threads each — default 1 — so N workers use N cores);
``workers=0`` runs in the calling process, one after the other; ``scheduler="tcp://host:port"``
or a ``distributed.Client`` sends the runs to a Dask cluster (``dask.distributed`` is
imported only then; the address is checked and probed first, ``dask_backend``).

Modules: ``config`` (reading and checking config files), ``grid`` (:class:`Sweep`), ``keys``
(parameters as JSON, :func:`run_key`), ``store`` (the results file), ``claims`` (who runs
which point), ``execute`` (one point), ``local`` and ``dask_backend`` (executors), ``driver``
(:func:`run_sweep`), ``summary`` (tables and the accuracy figure).
"""

from __future__ import annotations

from sigprop.experiments.sweep.config import parse_config, read_config
from sigprop.experiments.sweep.driver import SweepReport, run_sweep
from sigprop.experiments.sweep.grid import Sweep
from sigprop.experiments.sweep.keys import run_key
from sigprop.experiments.sweep.store import (
    append_row,
    iter_results,
    latest_rows,
    load_results,
    sweep_rows,
)
from sigprop.experiments.sweep.summary import (
    format_table,
    plot_accuracy_vs_density,
    summary_table,
)

__all__ = [
    "Sweep",
    "SweepReport",
    "append_row",
    "format_table",
    "iter_results",
    "latest_rows",
    "load_results",
    "parse_config",
    "plot_accuracy_vs_density",
    "read_config",
    "run_key",
    "run_sweep",
    "summary_table",
    "sweep_rows",
]
