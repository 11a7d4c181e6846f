"""One grid point, run where it is sent (this process, a local worker, a Dask worker).

:func:`execute_point` runs the point and returns its row; an exception inside the run
becomes an ``error`` row (``KeyboardInterrupt`` and ``SystemExit`` are not caught). A row
is never larger than :data:`~sigprop.experiments.sweep.store.MAX_ROW_BYTES`: a result too
big to store becomes an error row saying so.
"""

from __future__ import annotations

import inspect
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Mapping
from datetime import datetime, timezone

from sigprop._json import to_jsonable
from sigprop.experiments.sweep.keys import encode_params
from sigprop.experiments.sweep.store import MAX_ROW_BYTES
from sigprop.validate import InvalidInput

__all__ = ["check_params", "error_info", "execute_point", "limit_threads", "lost_row"]


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def execute_point(
    run: str, params: dict, key: str, torch_threads: int | None, allow_import: bool = False
) -> dict:
    """Run one grid point and return its row; exceptions become error rows."""
    if torch_threads is not None:
        limit_threads(torch_threads)
    from sigprop.experiments.runs import get_run

    start = time.perf_counter()
    row = {"key": key, "run": run, "params": encode_params(params)}
    try:
        result = get_run(run, allow_import=allow_import)(**params)
        if not isinstance(result, Mapping):
            raise TypeError(f"run {run!r} returned {type(result).__name__}, not a dict")
        row.update(status="ok", result=to_jsonable(result, "result"), error=None)
        size = len(json.dumps(row["result"], allow_nan=False))
        if size > MAX_ROW_BYTES // 2:
            raise InvalidInput(
                f"run {run!r} returned {size} bytes of JSON; a row holds at most "
                f"{MAX_ROW_BYTES // 2} bytes of result"
            )
    except Exception as exc:  # noqa: BLE001 - a failing run is recorded, not fatal
        row.update(status="error", result=None, error=error_info(exc))
    row["wall_time"] = time.perf_counter() - start
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    row["finished"] = _now()
    return row


def limit_threads(n: int) -> None:
    """One worker, ``n`` threads: set torch's intra-op threads if torch is loaded, else the
    OpenMP/MKL environment it reads on import (so theory-only runs never import torch)."""
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.get_num_threads() != n:
            torch.set_num_threads(n)
    else:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n)


def error_info(exc: BaseException) -> dict:
    """``type`` (the built-in category: ``ValueError`` for sigprop's ``InvalidInput``, stable
    across versions), ``message`` and ``traceback`` (its last 4000 characters)."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    kind = next(c for c in type(exc).__mro__ if c.__module__ == "builtins")
    return {"type": kind.__name__, "message": str(exc)[:4000], "traceback": tb[-4000:]}


def lost_row(run: str, params: dict, key: str, exc: BaseException) -> dict:
    """Row for a run whose worker failed outside the run (killed worker, broken pool)."""
    return {
        "key": key,
        "run": run,
        "params": encode_params(params),
        "status": "error",
        "result": None,
        "error": error_info(exc),
        "wall_time": None,
        "worker": None,
        "finished": _now(),
    }


def check_params(run: str, names, *, allow_import: bool = False) -> None:
    """Refuse parameter names the run function does not take, before anything runs."""
    from sigprop.experiments.runs import get_run

    fn = get_run(run, allow_import=allow_import)
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
    unknown = set(names) - accepted
    if unknown:
        raise InvalidInput(
            f"run {run!r} does not take parameter(s) {sorted(unknown)}; it takes {sorted(accepted)}"
        )
