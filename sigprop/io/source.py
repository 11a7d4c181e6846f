"""The checkpoint file itself: opening it safely, reading bytes from it, and the errors.

Every byte the readers look at comes through :class:`FileSource`:

* only a regular file is opened (a FIFO, a device, a socket or a directory is refused from
  ``stat`` before any read, and the file is opened with ``O_NONBLOCK`` so that a FIFO
  swapped in between cannot block);
* reads are ``pread`` calls on one file descriptor, never a memory map: a file truncated
  while it is read gives a short read and a :class:`FileChanged` error, not a SIGBUS
  (a memory-mapped page past the new end of the file kills the process);
* before each read the file's size and modification time are compared with those seen
  when it was opened, so a file rewritten in place is reported rather than half-read.

:func:`printable` makes text from a file safe to print (names, paths, library messages):
terminal escape sequences and other control or invisible characters are shown escaped.
"""

from __future__ import annotations

import os
import stat
import weakref

from sigprop.validate import InvalidInput

__all__ = ["CheckpointError", "FileChanged", "FileSource", "printable"]


def printable(text: object) -> str:
    """``text`` with every non-printable character escaped (``\\x1b``, ``\\n``, ``\\u202e``).

    Python's ``str.isprintable`` decides: control characters, format characters (such as
    bidirectional overrides) and line or paragraph separators are escaped, so a name read
    from a file can neither move the cursor, clear the screen nor start a new line.
    """
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for c in s:
        if c.isprintable():
            out.append(c)
        elif c in _SHORT:
            out.append(_SHORT[c])
        else:
            code = ord(c)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    return "".join(out)


_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


class CheckpointError(InvalidInput):
    """The file cannot be used as a checkpoint; the message says why, in one line.

    The message is made printable (:func:`printable`), so text taken from the file cannot
    inject terminal escape sequences or extra lines into an error report.
    """

    def __init__(self, message: object = "") -> None:
        super().__init__(printable(message))


class FileChanged(CheckpointError):
    """The file was truncated or rewritten while it was being read."""


_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileSource:
    """A checkpoint file opened for positional reads (see the module docstring).

    Attributes: ``path`` (as given), ``display`` (printable form for messages), ``size``.
    The descriptor is closed when the object is garbage-collected or :meth:`close` is called.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.display = printable(path)
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            raise CheckpointError(f"{self.display}: no such file") from None
        except OSError as exc:
            raise CheckpointError(
                f"{self.display}: cannot read the file ({exc.strerror or exc})"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise CheckpointError(f"{self.display}: is a directory, not a checkpoint file")
        if not stat.S_ISREG(st.st_mode):
            kind = next((what for test, what in _KINDS if test(st.st_mode)), "a special file")
            raise CheckpointError(f"{self.display}: is {kind}, not a regular file")
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        flags |= getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(path, flags)
        except OSError as exc:
            raise CheckpointError(
                f"{self.display}: cannot read the file ({exc.strerror or exc})"
            ) from None
        self._fd = fd
        self._finalizer = weakref.finalize(self, os.close, fd)
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            self.close()
            raise FileChanged(f"{self.display}: file changed while being read (replaced)")
        self._identity = (fst.st_dev, fst.st_ino, fst.st_size, fst.st_mtime_ns)
        self.size = int(fst.st_size)

    def close(self) -> None:
        self._finalizer()

    def reopen_path(self) -> str:
        """A path naming the opened file itself (``/proc/self/fd/N`` where the system has
        it), for a library that opens files by name: a file swapped in meanwhile under the
        original name (a FIFO, another file) is then not what it opens."""
        fd_path = f"/proc/self/fd/{self._fd}"
        return fd_path if os.path.exists(fd_path) else self.path

    def changed(self) -> FileChanged:
        return FileChanged(f"{self.display}: file changed while being read")

    def check_unchanged(self) -> None:
        """Raise :class:`FileChanged` if the file's size or modification time changed."""
        try:
            fst = os.fstat(self._fd)
        except OSError:
            raise self.changed() from None
        if (fst.st_dev, fst.st_ino, fst.st_size, fst.st_mtime_ns) != self._identity:
            raise self.changed()

    def readinto(self, offset: int, buf) -> None:
        """Fill ``buf`` (a writable buffer) with the bytes at ``offset``; all or an error."""
        view = memoryview(buf).cast("B")
        n = len(view)
        if offset < 0 or offset + n > self.size:
            raise CheckpointError(
                f"{self.display}: a read of {n} bytes at offset {offset} lies outside the "
                f"file ({self.size} bytes)"
            )
        self.check_unchanged()
        done = 0
        while done < n:
            try:
                got = os.preadv(self._fd, [view[done:]], offset + done)
            except OSError as exc:
                raise CheckpointError(
                    f"{self.display}: cannot read the file ({exc.strerror or exc})"
                ) from None
            if got <= 0:
                raise self.changed()
            done += got

    def pread(self, offset: int, n: int) -> bytes:
        """``n`` bytes at ``offset`` (all of them, or an error)."""
        buf = bytearray(n)
        if n:
            self.readinto(offset, buf)
        return bytes(buf)

    def head(self, n: int) -> bytes:
        """Up to ``n`` first bytes of the file."""
        return self.pread(0, min(n, self.size))
