"""Grids of runs — local processes by default, a Dask cluster on request — resumable.

A :class:`Sweep` is a named run function (:mod:`sigprop.experiments.runs`, or any
``"package.module:function"``), a ``grid`` of parameter lists whose Cartesian product gives
the runs, and ``fixed`` parameters shared by all. Write it in Python::

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

:func:`run_sweep` executes the runs not yet in the results file and appends one JSON line
per run. Guarantees:

* **Atomic rows.** Only the process that calls :func:`run_sweep` writes, one complete line
  per ``write`` on a file opened in append mode, under an exclusive ``flock`` and followed
  by ``fsync``. A line torn by a killed process (no final newline) is ignored by
  :func:`load_results` and cut off before the next append, so readers never see half a row.
* **Resume.** Each run has a key, the hash of its run name and parameters
  (:func:`run_key`); a key already in the file is not run again (failed runs too, unless
  ``retry_failed=True``). Interrupting a sweep (Ctrl-C, a killed process, a lost cluster) and
  starting it again completes it without duplicated or lost rows.
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
imported only then).
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
import os
import socket
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sigprop._json import to_jsonable
from sigprop.validate import InvalidInput

__all__ = [
    "Sweep",
    "SweepReport",
    "append_row",
    "load_results",
    "latest_rows",
    "run_key",
    "run_sweep",
    "summary_table",
    "sweep_rows",
    "format_table",
]

_TOML_KEYS = {"run", "name", "grid", "fixed", "summary", "out", "workers"}


def _canonical(params: Mapping) -> str:
    return json.dumps(to_jsonable(params, "params"), sort_keys=True, separators=(",", ":"))


def run_key(run: str, params: Mapping) -> str:
    """The resume key of a run: the first 16 hex digits of SHA-256 over the run name and its
    parameters as canonical JSON (sorted keys), so key order in a config never matters."""
    text = json.dumps({"run": run, "params": json.loads(_canonical(params))}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Sweep:
    """A grid of runs.

    Attributes
    ----------
    run : str
        A run registered in :data:`sigprop.experiments.runs.RUNS` or ``"module:function"``.
    grid : dict of str to tuple
        Parameter name → the values to sweep; the runs are the Cartesian product, in the
        order of the keys and values given (the last key varies fastest).
    fixed : dict
        Parameters shared by every run.
    name : str
        A label for reports (default: the run name).
    summary : tuple of str
        Result keys the summary table shows (default: the first few numeric ones).
    """

    run: str
    grid: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    name: str = ""
    summary: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.run, str) or not self.run:
            raise InvalidInput(f"run must be a run name or 'module:function', got {self.run!r}")
        if not isinstance(self.grid, Mapping) or not isinstance(self.fixed, Mapping):
            raise InvalidInput("grid and fixed must be mappings of parameter names to values")
        grid = {}
        for key, values in self.grid.items():
            if isinstance(values, str | bytes) or not isinstance(values, Sequence):
                raise InvalidInput(
                    f"grid[{key!r}] must be a list of values, got {values!r} "
                    "(put single values under 'fixed')"
                )
            if len(values) == 0:
                raise InvalidInput(f"grid[{key!r}] is empty")
            grid[str(key)] = tuple(values)
        both = set(grid) & set(self.fixed)
        if both:
            raise InvalidInput(f"parameter(s) {sorted(both)} are both in grid and in fixed")
        try:
            _canonical({**self.fixed, **{k: list(v) for k, v in grid.items()}})
        except TypeError as exc:
            raise InvalidInput(f"sweep parameters must be JSON values: {exc}") from None
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "fixed", dict(self.fixed))
        object.__setattr__(self, "summary", tuple(self.summary))
        object.__setattr__(self, "name", self.name or self.run)

    @classmethod
    def from_dict(cls, config: Mapping) -> Sweep:
        """From a parsed config (the TOML layout); ``out``/``workers`` are ignored here."""
        unknown = set(config) - _TOML_KEYS
        if unknown:
            raise InvalidInput(
                f"unknown sweep config key(s) {sorted(unknown)}; allowed: {sorted(_TOML_KEYS)}"
            )
        if "run" not in config:
            raise InvalidInput("sweep config needs a 'run' (e.g. run = \"train_pruned\")")
        summary = config.get("summary", ())
        if isinstance(summary, str) or not all(isinstance(s, str) for s in summary):
            raise InvalidInput("summary must be a list of result names")
        return cls(
            run=config["run"],
            grid=dict(config.get("grid", {})),
            fixed=dict(config.get("fixed", {})),
            name=str(config.get("name", "")),
            summary=tuple(summary),
        )

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> Sweep:
        """Read a TOML sweep config (see the module docstring)."""
        return cls.from_dict(read_config(path))

    def points(self) -> list[dict]:
        """The runs' parameter dicts (``fixed`` merged in), duplicates removed, in grid order."""
        keys = list(self.grid)
        seen, out = set(), []
        for values in itertools.product(*(self.grid[k] for k in keys)):
            params = {**self.fixed, **dict(zip(keys, values))}
            key = run_key(self.run, params)
            if key not in seen:
                seen.add(key)
                out.append(params)
        return out

    def to_dict(self) -> dict:
        out = {
            "run": self.run,
            "name": self.name,
            "grid": {k: list(v) for k, v in self.grid.items()},
            "fixed": dict(self.fixed),
            "summary": list(self.summary),
        }
        return to_jsonable(out, "Sweep")


def read_config(path: str | os.PathLike) -> dict:
    """Parse a TOML sweep config into a dict (``tomllib``; ``ValueError`` on bad TOML)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    path = Path(path)
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path}: not valid TOML: {exc}") from None


@dataclass(frozen=True)
class SweepReport:
    """What :func:`run_sweep` did.

    Attributes: ``name``; ``out`` (results file); ``total`` (distinct runs in the grid);
    ``skipped`` (already in the file); ``ran``, ``ok``, ``failed`` (this call);
    ``wall_time`` (seconds); ``executor`` (``"inline"``, ``"processes:N"`` or ``"dask:ADDRESS"``).
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

    def to_dict(self) -> dict:
        return to_jsonable(self, "SweepReport")


# ---------------------------------------------------------------------------- results file


def append_row(path: str | os.PathLike, row: Mapping) -> None:
    """Append ``row`` as one JSON line, atomically with respect to readers and other writers.

    The line is serialised first (strict JSON, no NaN), then written with a single
    ``os.write`` loop on an ``O_APPEND`` descriptor under an exclusive ``fcntl.flock`` and
    ``fsync``-ed before the lock is released. If the file ends in a torn line (a writer was
    killed mid-line), that fragment is truncated away first.
    """
    data = (json.dumps(row, allow_nan=False) + "\n").encode()
    fd = os.open(os.fspath(path), os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _lock(fd)
        try:
            _cut_torn_tail(fd)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            _unlock(fd)
    finally:
        os.close(fd)


def _lock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the single driver process is the writer
        return
    fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def _cut_torn_tail(fd: int) -> None:
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    pos, chunk = size, 65536
    while pos > 0:
        start = max(0, pos - chunk)
        block = os.pread(fd, pos - start, start)
        nl = block.rfind(b"\n")
        if nl >= 0:
            os.ftruncate(fd, start + nl + 1)
            return
        pos = start
    os.ftruncate(fd, 0)


def load_results(path: str | os.PathLike) -> list[dict]:
    """All complete rows of a results file, in file order (a missing file gives ``[]``).

    A final line without its newline (torn by a killed writer) is ignored; a malformed
    complete line raises ``ValueError`` naming its line number.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = data.split(b"\n")
    complete = lines[:-1]  # the last element is b"" or a torn fragment
    rows = []
    for i, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"{path}:{i}: not a JSON row ({exc})") from None
        if not isinstance(row, dict) or "key" not in row or "status" not in row:
            raise InvalidInput(f"{path}:{i}: not a sweep row (needs 'key' and 'status')")
        rows.append(row)
    return rows


def latest_rows(rows: Sequence[Mapping]) -> dict[str, dict]:
    """``{key: row}`` keeping the last row of each key (a retried run supersedes its error)."""
    return {row["key"]: dict(row) for row in rows}


def sweep_rows(sweep: Sweep, rows: Sequence[Mapping]) -> list[dict]:
    """The latest row of each of ``sweep``'s grid points, in grid order (points without a
    row yet are left out; rows of other sweeps sharing the file are ignored)."""
    latest = latest_rows(rows)
    keys = (run_key(sweep.run, p) for p in sweep.points())
    return [latest[k] for k in keys if k in latest]


# ---------------------------------------------------------------------------- execution


def _execute(run: str, params: dict, key: str, torch_threads: int | None) -> dict:
    """Run one grid point and return its row; exceptions become error rows."""
    if torch_threads is not None:
        _limit_threads(torch_threads)
    from sigprop.experiments.runs import get_run

    start = time.perf_counter()
    row = {"key": key, "run": run, "params": params}
    try:
        result = get_run(run)(**params)
        if not isinstance(result, Mapping):
            raise TypeError(f"run {run!r} returned {type(result).__name__}, not a dict")
        row.update(status="ok", result=to_jsonable(result, "result"), error=None)
    except Exception as exc:  # noqa: BLE001 - a failing run is recorded, not fatal
        row.update(status="error", result=None, error=_error(exc))
    row["wall_time"] = time.perf_counter() - start
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    row["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return row


def _limit_threads(n: int) -> None:
    """One worker, ``n`` threads: set torch's intra-op threads if torch is loaded, else the
    OpenMP/MKL environment it reads on import (so theory-only runs never import torch)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    else:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)


def _error(exc: BaseException) -> dict:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    # the built-in category (ValueError for sigprop's InvalidInput), stable across versions
    kind = next(c for c in type(exc).__mro__ if c.__module__ == "builtins")
    return {"type": kind.__name__, "message": str(exc), "traceback": tb[-4000:]}


def _lost_row(run: str, params: dict, key: str, exc: BaseException) -> dict:
    """Row for a run whose worker failed outside the run (killed worker, broken pool)."""
    return {
        "key": key,
        "run": run,
        "params": params,
        "status": "error",
        "result": None,
        "error": _error(exc),
        "wall_time": None,
        "worker": None,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _check_params(run: str, points: list[dict]) -> None:
    from sigprop.experiments.runs import get_run

    fn = get_run(run)
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    accepted = {
        n
        for n, p in sig.parameters.items()
        if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    }
    names = set().union(*(p.keys() for p in points)) if points else set()
    unknown = names - accepted
    if unknown:
        raise InvalidInput(
            f"run {run!r} does not take parameter(s) {sorted(unknown)}; it takes {sorted(accepted)}"
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
) -> SweepReport:
    """Run every grid point of ``sweep`` not yet in ``out`` and append one row per run.

    Parameters
    ----------
    sweep : Sweep
    out : path
        The JSON Lines results file (created if missing; its directory must exist).
    workers : int or None
        Local worker processes (default ``os.cpu_count()``, at most one per pending run);
        ``0`` runs everything in the calling process. Ignored with ``scheduler``.
    scheduler : str or distributed.Client or None
        A Dask scheduler address (``"tcp://host:8786"``) or a connected ``Client``: the runs
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
    """
    from tqdm.auto import tqdm

    if not isinstance(sweep, Sweep):
        raise InvalidInput(f"sweep must be a Sweep, got {type(sweep).__name__}")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 0
    ):
        raise InvalidInput(f"workers must be an integer >= 0, got {workers!r}")
    if max_runs is not None and (not isinstance(max_runs, int) or max_runs < 0):
        raise InvalidInput(f"max_runs must be an integer >= 0, got {max_runs!r}")
    if torch_threads is not None and (not isinstance(torch_threads, int) or torch_threads < 1):
        raise InvalidInput(
            f"torch_threads must be a positive integer or None, got {torch_threads!r}"
        )
    out = Path(out)
    if not out.parent.exists():
        raise InvalidInput(f"the directory of the results file {out} does not exist")

    points = sweep.points()
    _check_params(sweep.run, points)
    keyed = [(run_key(sweep.run, p), p) for p in points]
    done = latest_rows(load_results(out))
    finished = {k for k, row in done.items() if row["status"] == "ok" or not retry_failed}
    pending = [(k, p) for k, p in keyed if k not in finished]
    skipped = len(keyed) - len(pending)
    if max_runs is not None:
        pending = pending[:max_runs]

    counts = {"ok": 0, "error": 0}
    start = time.perf_counter()
    bar = tqdm(total=len(pending), desc=sweep.name, unit="run", disable=not progress)

    def record(row: dict) -> None:
        append_row(out, row)
        counts["ok" if row["status"] == "ok" else "error"] += 1
        bar.update(1)
        bar.set_postfix(ok=counts["ok"], failed=counts["error"])

    try:
        if not pending:
            executor = "none"
        elif scheduler is not None:
            executor = _run_dask(sweep.run, pending, scheduler, torch_threads, record)
        elif workers == 0:
            executor = "inline"
            for key, params in pending:
                record(_execute(sweep.run, params, key, None))
        else:
            n = min(workers or os.cpu_count() or 1, len(pending))
            executor = f"processes:{n}"
            _run_processes(sweep.run, pending, n, torch_threads, record)
    finally:
        bar.close()
    return SweepReport(
        name=sweep.name,
        out=str(out),
        total=len(keyed),
        skipped=skipped,
        ran=counts["ok"] + counts["error"],
        ok=counts["ok"],
        failed=counts["error"],
        wall_time=time.perf_counter() - start,
        executor=executor,
    )


def _run_processes(run, pending, n, torch_threads, record) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))
    try:
        futures = {
            pool.submit(_execute, run, params, key, torch_threads): (key, params)
            for key, params in pending
        }
        for fut in as_completed(futures):
            key, params = futures[fut]
            exc = fut.exception()
            record(_lost_row(run, params, key, exc) if exc else fut.result())
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_dask(run, pending, scheduler, torch_threads, record) -> str:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - dask is an optional extra
        raise InvalidInput(
            "a Dask scheduler needs dask.distributed: pip install 'sigprop[dask]'"
        ) from exc
    own = not isinstance(scheduler, Client)
    client = Client(scheduler, set_as_default=False) if own else scheduler
    try:
        address = client.scheduler.address
        futures = {}
        for key, params in pending:
            fut = client.submit(
                _execute,
                run,
                params,
                key,
                torch_threads,
                pure=False,
                key=f"sigprop-run-{key}-{os.urandom(4).hex()}",
            )
            futures[fut] = (key, params)
        try:
            for fut in as_completed(list(futures), loop=client.loop):
                key, params = futures[fut]
                if fut.status == "finished":
                    record(fut.result())
                else:
                    record(_lost_row(run, params, key, fut.exception()))
        except BaseException:
            client.cancel(list(futures))
            raise
    finally:
        if own:
            client.close()
    return f"dask:{address}"


# ---------------------------------------------------------------------------- summary


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def summary_table(
    rows: Sequence[Mapping],
    *,
    group_over: Sequence[str] = ("seed",),
    metrics: Sequence[str] = (),
    max_metrics: int = 3,
) -> list[dict]:
    """Aggregate result rows into one line per parameter setting.

    Rows are grouped by their parameters minus ``group_over`` (default: the seed, so seeds
    are averaged); each line has the varying parameters, ``n`` (runs), ``failed`` (error
    rows) and for every metric the mean and, with more than one run, the sample standard
    deviation (``<metric>_std``). ``metrics`` defaults to the first ``max_metrics`` numeric
    scalar results found.
    """
    rows = list(latest_rows(rows).values())
    if not rows:
        return []
    all_params = [r.get("params", {}) for r in rows]
    names = sorted(set().union(*(p.keys() for p in all_params)) - set(group_over))
    varying = [n for n in names if len({json.dumps(p.get(n)) for p in all_params}) > 1]
    if not metrics:
        found: list[str] = []
        for r in rows:
            for k, v in (r.get("result") or {}).items():
                if _is_number(v) and k not in found:
                    found.append(k)
        metrics = found[:max_metrics]
    groups: dict[str, list[Mapping]] = {}
    for r in rows:
        gkey = json.dumps({n: r.get("params", {}).get(n) for n in varying}, sort_keys=True)
        groups.setdefault(gkey, []).append(r)
    table = []
    for members in groups.values():
        line = {n: members[0].get("params", {}).get(n) for n in varying}
        ok = [m for m in members if m["status"] == "ok"]
        line["n"] = len(members)
        line["failed"] = len(members) - len(ok)
        for metric in metrics:
            values = [m["result"].get(metric) for m in ok]
            values = [float(v) for v in values if _is_number(v)]
            if values:
                mean = sum(values) / len(values)
                line[metric] = mean
                if len(values) > 1:
                    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
                    line[f"{metric}_std"] = math.sqrt(var)
            else:
                line[metric] = None
        table.append(line)
    return table


def format_table(table: Sequence[Mapping]) -> str:
    """Plain-text table of :func:`summary_table` lines (``mean ± std`` where available)."""
    if not table:
        return "(no runs)"
    columns = [c for c in table[0] if not c.endswith("_std")]
    for line in table[1:]:
        columns += [c for c in line if c not in columns and not c.endswith("_std")]

    def cell(line, col):
        v = line.get(col)
        if v is None:
            return "-"
        if isinstance(v, float):
            text = f"{v:.4g}"
            std = line.get(f"{col}_std")
            return f"{text} ± {std:.2g}" if std is not None else text
        return str(v)

    cells = [[cell(line, c) for c in columns] for line in table]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(out)
