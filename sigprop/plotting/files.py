"""Writing output files atomically: a reader sees the old file or the new one, never a part.

The data goes to a temporary file in the destination's folder, is flushed and ``fsync``\\ ed,
gets the mode a plain ``open()`` would have given, and is renamed over the destination
(``os.replace``, atomic on POSIX and Windows within one file system). A failure leaves the
destination as it was and removes the temporary file.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

from sigprop.validate import InvalidType

__all__ = ["save_figure", "write_atomic"]


def write_atomic(path: str | os.PathLike, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Write ``data`` (bytes, or text encoded with ``encoding``) to ``path`` atomically; the
    folder must exist. Returns the path."""
    if isinstance(data, str):
        data = data.encode(encoding)
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidType(f"data must be bytes or str, got {type(data).__name__}")
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # name the destination, not the temporary file
        raise OSError(exc.errno, exc.strerror, str(path)) from None
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


def save_figure(
    fig, path: str | os.PathLike, *, fmt: str = "png", dpi: int = 150, **savefig
) -> Path:
    """``fig.savefig`` under exactly ``path`` in format ``fmt``, atomically.

    The figure is rendered in memory and written with :func:`write_atomic` (matplotlib
    would append a suffix to a name without one, so it is never given the name). A link,
    FIFO or device (``/dev/stdout``) is written where it points instead, since it cannot
    be replaced by a rename.
    """
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_file()):
        with open(path, "wb") as fh:
            fig.savefig(fh, format=fmt, dpi=dpi, **savefig)
        return path
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, **savefig)
    return write_atomic(path, buf.getbuffer())
