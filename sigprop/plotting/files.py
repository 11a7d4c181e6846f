"""Writing output files atomically: a reader sees the old file or the new one, never a part.

The data goes to a temporary file in the destination's folder, is flushed and ``fsync``\\ ed,
gets the mode a plain ``open()`` would have given, and is renamed over the destination
(``os.replace``, atomic on POSIX and Windows within one file system). A failure leaves the
destination as it was and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from sigprop.validate import InvalidType

__all__ = ["write_atomic"]


def write_atomic(path: str | os.PathLike, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (bytes, or text encoded with ``encoding``) to ``path`` atomically; the
    folder must exist. Returns the path."""
    if isinstance(data, str):
        data = data.encode(encoding)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidType(f"data must be bytes or str, got {type(data).__name__}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path
