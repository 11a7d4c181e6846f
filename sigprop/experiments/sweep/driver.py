""":func:`run_sweep`: claim pending grid points, run them on an executor, record their rows."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from sigprop._json import to_jsonable
from sigprop.experiments.runs import check_run_ref
from sigprop.experiments.sweep.claims import Ledger
from sigprop.experiments.sweep.config import MAX_WORKERS, check_workers
from sigprop.experiments.sweep.execute import check_params, lost_row
from sigprop.experiments.sweep.grid import Sweep
from sigprop.experiments.sweep.keys import run_key
from sigprop.validate import InvalidInput, InvalidType, nonneg_int, positive_float, positive_int

__all__ = ["SweepReport", "run_sweep"]

#: Most torch threads per worker.
MAX_THREADS = 1024


@dataclass(frozen=True)
class SweepReport:
    """What :func:`run_sweep` did.

    Attributes: ``name``; ``out`` (results file); ``total`` (distinct runs in the grid);
    ``skipped`` (already in the file); ``ran``, ``ok``, ``failed`` (this call);
    ``wall_time`` (seconds); ``executor`` (``"inline"``, ``"processes:N"``,
    ``"dask:ADDRESS"`` or ``"none"``); ``elsewhere`` (runs left unfinished because another
    sweep that is still running holds them).
    """

    name: str
    out: str
    total: int
    skipped: int
    ran: int
    ok: int
    failed: int
    wall_time: float
    executor: str
    elsewhere: int = 0

    def to_dict(self) -> dict:
        return to_jsonable(self, "SweepReport")


def _drive(ledger, executor, window, budget, run, record) -> None:
    """Keep ``window`` points in flight, claiming one as another finishes, until nothing is
    left to claim (or ``budget`` points were claimed)."""
    in_flight: dict = {}
    claimed = 0
    while True:
        room = window - len(in_flight)
        if budget is not None:
            room = min(room, budget - claimed)
        for key, params in ledger.claim(room):
            in_flight[executor.submit(key, params)] = (key, params)
            claimed += 1
        if not in_flight:
            return
        for handle, outcome in executor.wait(in_flight):
            key, params = in_flight.pop(handle)
            record(
                lost_row(run, params, key, outcome)
                if isinstance(outcome, BaseException)
                else outcome
            )


def run_sweep(
    sweep: Sweep,
    out: str | os.PathLike,
    *,
    workers: int | None = None,
    scheduler=None,
    retry_failed: bool = False,
    max_runs: int | None = None,
    torch_threads: int | None = 1,
    progress: bool = True,
    allow_import: bool = False,
    connect_timeout: float = 10.0,
) -> SweepReport:
    """Run every grid point of ``sweep`` not yet in ``out`` and append one row per run.

    Each point is claimed before it runs (:mod:`~sigprop.experiments.sweep.claims`), so
    several sweeps may share one results file: each point is run once, and the points of a
    sweep that died are run by the next one.

    Parameters
    ----------
    sweep : Sweep
    out : path
        The JSON Lines results file (created if missing; its directory must exist). An
        existing file must be a results file (:mod:`~sigprop.experiments.sweep.store`).
    workers : int or None
        Local worker processes (default ``os.cpu_count()``, at most one per pending run and
        at most 256); ``0`` runs everything in the calling process. Ignored with
        ``scheduler``.
    scheduler : str or distributed.Client or None
        A Dask scheduler address (``"tcp://host:8786"``; checked and probed first, see
        :mod:`~sigprop.experiments.sweep.dask_backend`) or a connected ``Client``: the runs
        are submitted to that cluster. A client made from an address is closed at the end.
    retry_failed : bool
        Run again the points whose latest row is an error (the new row supersedes it; see
        :func:`latest_rows`).
    max_runs : int or None
        Stop after this many runs (the rest stays pending for the next call).
    torch_threads : int or None
        ``torch.set_num_threads`` inside each worker process / Dask worker (not applied with
        ``workers=0``, where it would change the caller's global state); ``None`` leaves it.
    progress : bool
        tqdm bar over the pending runs.
    allow_import : bool
        Let ``sweep.run`` be a ``"package.module:function"`` path, imported and called on
        every worker (default ``False``: registered runs only). With it, a sweep is code.
    connect_timeout : float
        Seconds to wait for a Dask scheduler to answer.
    """
    from tqdm.auto import tqdm

    if not isinstance(sweep, Sweep):
        raise InvalidType(f"sweep must be a Sweep, got {type(sweep).__name__}")
    workers = check_workers(workers)
    if max_runs is not None:
        max_runs = nonneg_int(max_runs, "max_runs")
    if torch_threads is not None:
        torch_threads = positive_int(torch_threads, "torch_threads")
        if torch_threads > MAX_THREADS:
            raise InvalidInput(f"torch_threads must be at most {MAX_THREADS}")
    connect_timeout = positive_float(connect_timeout, "connect_timeout")
    out = Path(out)
    if not out.parent.is_dir():
        raise InvalidInput(f"the directory of the results file {out} does not exist")
    check_run_ref(sweep.run, allow_import=allow_import)
    check_params(sweep.run, [*sweep.fixed, *sweep.grid], allow_import=allow_import)
    keyed = [(run_key(sweep.run, p), p) for p in sweep.points()]

    counts = {"ok": 0, "error": 0}
    start = time.perf_counter()
    executor = None
    if scheduler is not None:  # connect first: an unusable scheduler leaves no file behind
        from sigprop.experiments.sweep.dask_backend import DaskExecutor

        executor = DaskExecutor(
            sweep.run, scheduler, torch_threads, allow_import=allow_import, timeout=connect_timeout
        )
    try:
        with Ledger(out, keyed, retry_failed=retry_failed) as ledger:
            pending = len(keyed) - ledger.skipped
            if max_runs is not None:
                pending = min(pending, max_runs)
            bar = tqdm(total=pending, desc=sweep.name, unit="run", disable=not progress)

            def record(row: dict) -> None:
                ledger.record(row)
                counts["ok" if row["status"] == "ok" else "error"] += 1
                bar.update(1)
                bar.set_postfix(ok=counts["ok"], failed=counts["error"])

            try:
                if pending == 0:
                    name = "none"
                else:
                    if executor is None:
                        executor = _local_executor(
                            sweep.run, pending, workers, torch_threads, allow_import
                        )
                    name = executor.name
                    _drive(ledger, executor, executor.window(), max_runs, sweep.run, record)
                elsewhere = ledger.elsewhere()
            finally:
                bar.close()
    except BaseException:
        if executor is not None:  # an exception or Ctrl-C: stop what is in flight
            executor.close(cancel=True)
        raise
    if executor is not None:
        executor.close()
    return SweepReport(
        name=sweep.name,
        out=str(out),
        total=len(keyed),
        skipped=ledger.skipped,
        ran=counts["ok"] + counts["error"],
        ok=counts["ok"],
        failed=counts["error"],
        wall_time=time.perf_counter() - start,
        executor=name,
        elsewhere=elsewhere,
    )


def _local_executor(run, pending, workers, torch_threads, allow_import):
    """The calling process (``workers=0``) or up to ``workers`` processes."""
    from sigprop.experiments.sweep.local import InlineExecutor, ProcessExecutor

    if workers == 0:
        return InlineExecutor(run, allow_import=allow_import)
    n = min(workers or os.cpu_count() or 1, MAX_WORKERS, pending)
    return ProcessExecutor(run, n, torch_threads, allow_import=allow_import)
