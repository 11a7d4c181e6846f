"""The results file: one JSON row per line, appended under a lock, read in bounded memory.

Writing. :func:`append_row` serialises the row first (strict JSON, ``"key"`` first, at
most :data:`MAX_ROW_BYTES`), then, on an ``O_APPEND`` descriptor of a *regular* file under
an exclusive ``flock``, repairs the tail, writes the line with one ``os.write`` loop and
``fsync``-s before unlocking. Repairing the tail never destroys data that is not a row:

* the file ends with a newline: nothing to do;
* its last line is a complete row missing only its newline: the newline is added;
* its last line is a strict prefix of a row (``{"key": ...`` cut short by a killed writer or
  a full disk): that fragment is cut off;
* anything else (the file is not a results file, e.g. a one-line JSON report): refused with
  :class:`~sigprop.validate.InvalidInput`, the file untouched.

Reading. Lines are read in chunks, never more than :data:`MAX_ROW_BYTES` of one line at a
time; a line nested deeper than :data:`MAX_ROW_DEPTH` or with an integer of more than
:data:`MAX_INT_DIGITS` digits is refused before ``json`` recurses or converts it; the
non-standard ``NaN``/``Infinity`` are refused. A final line without its newline (being
written, or torn) is not a row yet and is skipped.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from sigprop.experiments.sweep.keys import decode_params
from sigprop.validate import InvalidInput, InvalidType

__all__ = [
    "HAVE_FLOCK",
    "MAX_ROW_BYTES",
    "MAX_ROW_DEPTH",
    "parse_row",
    "append_row",
    "encode_row",
    "iter_results",
    "latest_rows",
    "load_results",
    "lock",
    "open_results",
    "read_rows",
    "repair_tail",
    "sweep_rows",
    "unlock",
    "write_line",
]

#: Longest row (bytes, newline included).
MAX_ROW_BYTES = 16 << 20
#: Deepest nesting of lists/objects inside one row.
MAX_ROW_DEPTH = 64
#: Longest integer literal in a row (digits).
MAX_INT_DIGITS = 40

_ROW_PREFIX = b'{"key": '
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_CHUNK = 1 << 20

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: one writer, the sweep's driver
    fcntl = None

#: Whether the results file and its claims can be locked (POSIX ``flock``).
HAVE_FLOCK = fcntl is not None


def lock(fd: int, *, blocking: bool = True) -> bool:
    """Take an exclusive ``flock`` on ``fd``; with ``blocking=False`` return ``False``
    instead of waiting when another open file description holds it."""
    if fcntl is None:  # pragma: no cover
        return True
    if blocking:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def open_results(path: str | os.PathLike) -> int:
    """An ``O_RDWR | O_APPEND`` descriptor of the results file, created if missing.

    Refused (the descriptor closed) unless it is a regular file: a FIFO, a device such as
    ``/dev/full`` or ``/dev/zero``, or a directory is never read or written. Opened without
    blocking, so a FIFO cannot make the sweep wait for a reader.
    """
    flags = os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(os.fspath(path), flags, 0o644)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise InvalidInput(f"results file {path} is not a regular file")
    os.set_blocking(fd, True)
    return fd


def encode_row(row: Mapping) -> bytes:
    """One row as a JSON line: ``"key"`` first, strict JSON (``ValueError`` on NaN)."""
    if not isinstance(row, Mapping) or not isinstance(row.get("key"), str):
        raise InvalidType("a sweep row is a dict with a string 'key'")
    data = (json.dumps({"key": row["key"], **row}, allow_nan=False) + "\n").encode()
    if len(data) > MAX_ROW_BYTES:
        raise InvalidInput(f"row {row['key']} is {len(data)} bytes; at most {MAX_ROW_BYTES}")
    return data


def _last_line_start(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 if none), looking back at most
    :data:`MAX_ROW_BYTES`; -1 when the last line is longer than that."""
    pos = size
    while pos > max(0, size - MAX_ROW_BYTES):
        start = max(0, pos - _CHUNK, size - MAX_ROW_BYTES)
        nl = os.pread(fd, pos - start, start).rfind(b"\n")
        if nl >= 0:
            return start + nl + 1
        pos = start
    return 0 if size <= MAX_ROW_BYTES else -1


def repair_tail(fd: int, path: str | os.PathLike = "results file") -> None:
    """Make a locked results file end with a newline (see the module docstring)."""
    size = os.fstat(fd).st_size
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return
    start = _last_line_start(fd, size)
    if start >= 0:
        tail = os.pread(fd, size - start, start)
        if parse_row(tail, f"{path}: last line", strict=False) is not None:
            write_line(fd, b"\n")  # a complete row that lost only its newline
            return
        if tail.startswith(_ROW_PREFIX) or _ROW_PREFIX.startswith(tail):
            os.ftruncate(fd, start)  # a row torn by a killed writer
            return
    raise InvalidInput(
        f"{path} ends with a line that is not a sweep row: it is not a results file "
        "(left unchanged; choose another --out)"
    )


def write_line(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` and ``fsync`` it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def append_row(path: str | os.PathLike, row: Mapping) -> None:
    """Append ``row`` as one JSON line, atomically with respect to readers and other writers
    (see the module docstring). Refused if ``path`` is not a regular file or is not a
    results file."""
    data = encode_row(row)
    fd = open_results(path)
    try:
        lock(fd)
        try:
            repair_tail(fd, path)
            write_line(fd, data)
        finally:
            unlock(fd)
    finally:
        os.close(fd)


def _nesting(line: bytes) -> int:
    code = np.frombuffer(_JSON_STRING.sub(b'""', line), dtype=np.uint8)
    step = (code == ord("[")).astype(np.int64) + (code == ord("{"))
    step -= (code == ord("]")).astype(np.int64) + (code == ord("}"))
    running = np.concatenate(([0], np.cumsum(step)))
    return int(np.max(running - np.minimum.accumulate(running)))


def _refuse_constant(name: str):
    raise InvalidInput(f"{name} is not strict JSON")


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise InvalidInput(f"an integer of {len(text)} digits")
    return int(text)


def parse_row(line: bytes, where: str, *, strict: bool = True) -> dict | None:
    """A row from one line of a results file; ``None`` for a blank line. With
    ``strict=False`` a line that is not a row gives ``None`` instead of an error."""
    if not line.strip():
        return None
    try:
        if line.count(b"[") + line.count(b"{") > MAX_ROW_DEPTH and _nesting(line) > MAX_ROW_DEPTH:
            raise InvalidInput(f"nested deeper than {MAX_ROW_DEPTH}")
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("not UTF-8") from None
        try:
            row = json.loads(text, parse_int=_bounded_int, parse_constant=_refuse_constant)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"not a JSON row ({exc})") from None
        if not isinstance(row, dict) or not isinstance(row.get("key"), str) or "status" not in row:
            raise InvalidInput("not a sweep row (needs 'key' and 'status')")
    except InvalidInput as exc:
        if not strict:
            return None
        raise InvalidInput(f"{where}: {exc}") from None
    if "params" in row:
        row["params"] = decode_params(row["params"])
    return row


def read_rows(fd: int, start: int = 0, where: str = "results file") -> Iterator[tuple[dict, int]]:
    """``(row, offset after its line)`` for every complete row from ``start`` on."""
    pos, buf, lineno = start, b"", 0
    while True:
        chunk = os.pread(fd, _CHUNK, pos + len(buf))
        if not chunk:
            return
        buf += chunk
        begin = 0
        while True:
            nl = buf.find(b"\n", begin)
            if nl < 0:
                break
            lineno += 1
            row = parse_row(buf[begin:nl], f"{where}:{lineno}" if start == 0 else where)
            begin = nl + 1
            if row is not None:
                yield row, pos + begin
        pos += begin
        buf = buf[begin:]
        if len(buf) > MAX_ROW_BYTES:
            raise InvalidInput(f"{where}: a line longer than {MAX_ROW_BYTES} bytes")


def iter_results(path: str | os.PathLike) -> Iterator[dict]:
    """The complete rows of a results file, in file order, streamed (a missing file has
    none). A malformed complete line raises :class:`InvalidInput` naming its line number."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"results file {path} is not a regular file")
        for row, _ in read_rows(fd, 0, str(path)):
            yield row
    finally:
        os.close(fd)


def load_results(path: str | os.PathLike) -> list[dict]:
    """All complete rows of a results file, in file order (a missing file gives ``[]``).

    A final line without its newline (torn by a killed writer) is ignored; a malformed
    complete line raises ``InvalidInput`` (a ``ValueError``) naming its line number.
    Parameters come back with their non-finite floats (:mod:`~sigprop.experiments.sweep.keys`).
    """
    return list(iter_results(Path(path)))


def latest_rows(rows: Iterable[Mapping]) -> dict[str, dict]:
    """``{key: row}`` keeping the last row of each key (a retried run supersedes its error)."""
    return {row["key"]: dict(row) for row in rows}


def sweep_rows(sweep, rows: Iterable[Mapping]) -> list[dict]:
    """The latest row of each of ``sweep``'s grid points, in grid order (points without a
    row yet are left out; rows of other sweeps sharing the file are ignored). ``rows`` may
    be a stream (:func:`iter_results`): only rows of this sweep are kept."""
    from sigprop.experiments.sweep.keys import run_key

    keys = [run_key(sweep.run, p) for p in sweep.points()]
    wanted = set(keys)
    latest = latest_rows(r for r in rows if r["key"] in wanted)
    return [latest[k] for k in keys if k in latest]
