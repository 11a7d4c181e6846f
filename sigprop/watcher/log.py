"""The watcher's log: ``LOG_DIR/sigprop.jsonl``, one JSON object per line.

Format (one record per recorded step)::

    {"step": N,
     "layers": {name: {"grad_norm": x, "weight_norm": x, "q": x, "density": x}, ...},
     "collapse": {...},      # at step 0 and whenever a mask changed (optional)
     "predicted": {...}}     # at step 0 when a prediction was given (optional)

A value that was not measured (no gradient yet, no forward pass) or is not finite is
``null``: the file is strict JSON.

Writing (:class:`LogWriter`): each record is one ``write`` of a whole line to a file opened
for appending, so a process that dies (an exception, ``kill -9``, the OOM killer) loses at
most the record being written, left as a *torn* last line without its newline. A
background thread ``fsync``\\ s the file within :data:`SYNC_INTERVAL` seconds of every
write, so a machine that loses power loses at most the records of the last interval and
sync (usually none or one) without the training loop ever waiting for the disk — or even
waking the thread: it polls a flag, since signalling it at every record cost more than
the record itself on a loaded machine; :meth:`LogWriter.close` syncs in the foreground.
Reopening a log cuts a torn last line and continues after the last complete step. An exclusive ``flock`` keeps two watchers from interleaving one file.

Reading (:func:`read_log`) treats the file as hostile: lines and records are bounded,
every field is type-checked, and anything malformed raises
:class:`~sigprop.validate.InvalidInput` with one line naming the line number. A torn last
line (a crash, or a run still writing) is skipped, not an error; a step recorded twice (a
run restarted from an earlier checkpoint) keeps its latest record.
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sigprop.validate import InvalidInput, positive_int

__all__ = [
    "LOG_NAME",
    "QUANTITIES",
    "LogWriter",
    "WatchLog",
    "log_path",
    "read_log",
]

#: The file name inside the log folder.
LOG_NAME = "sigprop.jsonl"
#: The per-layer quantities of a record, in the order of the format.
QUANTITIES = ("grad_norm", "weight_norm", "q", "density")

#: Defaults of :func:`read_log`'s bounds.
MAX_LINE_BYTES = 4 << 20
MAX_RECORDS = 1_000_000
MAX_LAYERS = 10_000
#: Seconds between the sync thread's checks for unsynced records.
SYNC_INTERVAL = 0.05
MAX_CELLS = 4_000_000  # records × layers: the 4 float64 tables of this size take 128 MB


def log_path(path: str | os.PathLike) -> Path:
    """The log file for ``path``: ``path/sigprop.jsonl`` for a folder, ``path`` itself
    for a file."""
    path = Path(path)
    return path / LOG_NAME if path.is_dir() else path


# -- writing -----------------------------------------------------------------------------


class LogWriter:
    """Append-only writer of one log file (module docstring). ``last_step`` is the step of
    the last complete record found when it was opened (``None`` for a new log)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            _lock(fd, self.path)
            self.last_step, self.cut = _recover(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._dirty = False
        self._stop = threading.Event()
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._sync_loop, name="sigprop-log-fsync")
        self._thread.daemon = True
        self._thread.start()

    def write(self, record: dict) -> None:
        """Append ``record`` as one line (strict JSON: non-finite numbers must already be
        ``None``)."""
        if self._fd is None:
            raise InvalidInput(f"{self.path}: the log is closed")
        if self._error is not None:
            raise self._error
        data = (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        self._dirty = True  # a plain flag: the sync thread polls it

    def _sync_loop(self) -> None:
        while not self._stop.wait(SYNC_INTERVAL):
            if not self._dirty:
                continue
            self._dirty = False
            try:
                os.fsync(self._fd)
            except OSError as exc:  # reported by the next write
                self._error = exc
                return

    def close(self) -> None:
        """Stop the sync thread, sync and close the file (idempotent)."""
        if self._fd is None:
            return
        self._stop.set()
        self._thread.join()
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)  # releases the lock
            self._fd = None


def _lock(fd: int, path: Path) -> None:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InvalidInput(f"{path} is being written by another watcher") from None


def _recover(fd: int, path: Path) -> tuple[int | None, int]:
    """Cut a torn last line; return (step of the last complete record or None, bytes cut)."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None, 0
    end = _last_newline(fd, size)  # offset just past the last newline, 0 if none
    cut = size - end
    if cut:
        os.ftruncate(fd, end)
    if end == 0:
        return None, cut
    start = _last_newline(fd, end - 1)
    if end - start > MAX_LINE_BYTES:
        raise InvalidInput(f"{path}: the last record is longer than {MAX_LINE_BYTES} bytes")
    line = os.pread(fd, end - start, start)
    record = _parse_line(line, path, "last line")
    return _check_record(record, path, "last line")[0], cut


def _last_newline(fd: int, end: int, block: int = 1 << 16) -> int:
    """Offset just past the last ``\\n`` before ``end`` (0 when there is none)."""
    pos = end
    while pos > 0:
        start = max(0, pos - block)
        chunk = os.pread(fd, pos - start, start)
        i = chunk.rfind(b"\n")
        if i >= 0:
            return start + i + 1
        pos = start
        if end - pos > MAX_LINE_BYTES:
            raise InvalidInput(f"a line of the log is longer than {MAX_LINE_BYTES} bytes")
    return 0


# -- reading -----------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchLog:
    """A log read by :func:`read_log`.

    Attributes
    ----------
    path : Path
    steps : (R,) int64 array
        Recorded steps, increasing (each step once: its latest record).
    layers : tuple of str
        Layer names in the order they first appear.
    values : dict
        ``{quantity: (R, L) float64 array}`` for every name in :data:`QUANTITIES`; NaN
        where a value was not recorded.
    predicted : dict
        ``{layer: {key: value}}`` from the step-0 record's ``predicted`` (empty without).
    collapse : tuple of (step, dict)
        Every ``collapse`` entry, in step order.
    torn : bool
        Whether a torn last line (no newline) was skipped.
    """

    path: Path
    steps: np.ndarray
    layers: tuple[str, ...]
    values: dict = field(default_factory=dict)
    predicted: dict = field(default_factory=dict)
    collapse: tuple = ()
    torn: bool = False


def read_log(
    path: str | os.PathLike,
    *,
    max_line_bytes: int = MAX_LINE_BYTES,
    max_records: int = MAX_RECORDS,
    max_layers: int = MAX_LAYERS,
    max_cells: int = MAX_CELLS,
) -> WatchLog:
    """Read a watcher log (a folder holding ``sigprop.jsonl``, or the file itself).

    Bounds: a line longer than ``max_line_bytes``, more than ``max_records`` records, more
    than ``max_layers`` distinct layer names or more than ``max_cells`` (records × layers)
    values raise :class:`~sigprop.validate.InvalidInput`, as does any malformed line (not
    UTF-8, not JSON, NaN/Infinity literals, a wrong type, a negative step) and a log
    without a complete record. Memory is bounded by those limits, not by the file size.
    """
    max_line_bytes = positive_int(max_line_bytes, "max_line_bytes")
    max_records = positive_int(max_records, "max_records")
    max_layers = positive_int(max_layers, "max_layers")
    max_cells = positive_int(max_cells, "max_cells")
    path = log_path(path)
    if not path.is_file():
        raise InvalidInput(f"{path}: no such log file")
    by_step: dict[int, int] = {}
    rows: list[np.ndarray] = []  # one (4, n_layers_so_far) array per record
    steps: list[int] = []
    layer_index: dict[str, int] = {}
    predicted: dict = {}
    collapse: dict[int, dict] = {}
    torn = False
    cells = 0
    with open(path, "rb") as f:
        lineno = 0
        while True:
            line = f.readline(max_line_bytes + 1)
            if not line:
                break
            lineno += 1
            if not line.endswith(b"\n"):
                if len(line) > max_line_bytes:
                    raise InvalidInput(
                        f"{path}: line {lineno} is longer than {max_line_bytes} bytes"
                    )
                torn = True  # the last line, cut short by a crash or still being written
                break
            if not line.strip():
                raise InvalidInput(f"{path}: line {lineno} is empty")
            where = f"line {lineno}"
            step, layers, extra = _check_record(_parse_line(line, path, where), path, where)
            for name in layers:
                if name not in layer_index:
                    if len(layer_index) >= max_layers:
                        raise InvalidInput(f"{path}: more than {max_layers} layers")
                    layer_index[name] = len(layer_index)
            row = np.full((len(QUANTITIES), len(layer_index)), np.nan)
            for name, entry in layers.items():
                j = layer_index[name]
                for k, q in enumerate(QUANTITIES):
                    v = entry.get(q)
                    if v is not None:
                        row[k, j] = v
            if step in by_step:
                rows[by_step[step]] = row
            else:
                if len(steps) >= max_records:
                    raise InvalidInput(f"{path}: more than {max_records} records")
                by_step[step] = len(steps)
                steps.append(step)
                rows.append(row)
            cells += len(layer_index)
            if cells > max_cells:
                raise InvalidInput(f"{path}: more than {max_cells} values")
            if "collapse" in extra:
                collapse[step] = extra["collapse"]
            if step == 0 and "predicted" in extra:
                predicted = extra["predicted"]
    if not steps:
        raise InvalidInput(f"{path}: no complete record")
    order = np.argsort(np.asarray(steps, dtype=np.int64), kind="stable")
    n_layers = len(layer_index)
    table = np.full((len(steps), len(QUANTITIES), n_layers), np.nan)
    for i, row in enumerate(rows):
        table[i, :, : row.shape[1]] = row
    table = table[order]
    return WatchLog(
        path=path,
        steps=np.asarray(steps, dtype=np.int64)[order],
        layers=tuple(layer_index),
        values={q: table[:, k, :] for k, q in enumerate(QUANTITIES)},
        predicted=predicted,
        collapse=tuple(sorted(collapse.items())),
        torn=torn,
    )


def _reject_constant(name: str):
    raise InvalidInput(f"{name} is not a JSON number")


def _parse_line(line: bytes, path: Path, where: str):
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{path}: {where} is not UTF-8") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except InvalidInput as exc:
        raise InvalidInput(f"{path}: {where}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{path}: {where} is not JSON ({exc.msg})") from None
    except RecursionError:
        raise InvalidInput(f"{path}: {where} is nested too deeply") from None
    except ValueError as exc:  # json's int() of an over-long digit string
        raise InvalidInput(f"{path}: {where}: {exc}") from None


def _number(v, path: Path, where: str, key: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidInput(f"{path}: {where}: {key} must be a number or null")
    try:
        v = float(v)
    except OverflowError:
        raise InvalidInput(f"{path}: {where}: {key} is out of range") from None
    if not math.isfinite(v):
        raise InvalidInput(f"{path}: {where}: {key} is not finite")
    return v


def _check_record(record, path: Path, where: str) -> tuple[int, dict, dict]:
    """``(step, {layer: {quantity: float|None}}, {"collapse": ..., "predicted": ...})``."""
    if not isinstance(record, dict):
        raise InvalidInput(f"{path}: {where} is not a JSON object")
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 2**63:
        raise InvalidInput(f"{path}: {where}: step must be an integer >= 0")
    layers = record.get("layers")
    if not isinstance(layers, dict):
        raise InvalidInput(f"{path}: {where}: layers must be an object")
    out: dict[str, dict] = {}
    for name, entry in layers.items():
        if not isinstance(entry, dict):
            raise InvalidInput(f"{path}: {where}: layer {name[:80]!r} must be an object")
        out[name] = {
            q: _number(entry.get(q), path, where, f"{name[:80]}.{q}")
            for q in QUANTITIES
            if q in entry
        }
    extra: dict = {}
    if "collapse" in record:
        extra["collapse"] = _check_collapse(record["collapse"], path, where)
    if "predicted" in record:
        pred = record["predicted"]
        if not isinstance(pred, dict):
            raise InvalidInput(f"{path}: {where}: predicted must be an object")
        extra["predicted"] = {}
        for name, entry in pred.items():
            if not isinstance(entry, dict):
                raise InvalidInput(f"{path}: {where}: predicted {name[:80]!r} must be an object")
            extra["predicted"][name] = {
                k: _number(v, path, where, f"predicted.{k[:40]}") for k, v in entry.items()
            }
    return step, out, extra


def _check_collapse(entry, path: Path, where: str) -> dict:
    if not isinstance(entry, dict):
        raise InvalidInput(f"{path}: {where}: collapse must be an object")
    out: dict = {}
    for key in ("density", "effective_density"):
        if key in entry:
            out[key] = _number(entry[key], path, where, f"collapse.{key}")
    for key in ("collapsed_layers", "effectively_collapsed_layers"):
        if key in entry:
            names = entry[key]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise InvalidInput(f"{path}: {where}: collapse.{key} must be a list of names")
            out[key] = list(names)
    if "connected" in entry:
        if entry["connected"] is not None and not isinstance(entry["connected"], bool):
            raise InvalidInput(f"{path}: {where}: collapse.connected must be true/false/null")
        out["connected"] = entry["connected"]
    if "error" in entry:
        if not isinstance(entry["error"], str):
            raise InvalidInput(f"{path}: {where}: collapse.error must be a string")
        out["error"] = entry["error"]
    return out
