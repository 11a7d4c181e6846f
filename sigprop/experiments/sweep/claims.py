"""Claims: two sweeps writing one results file never run a grid point twice, and a point
claimed by a driver that crashed is run again by the next one.

Every step below happens under the exclusive ``flock`` of the results file, so the steps of
two drivers never interleave:

1. **Register.** The driver creates its claim file ``OUT.claims/HOST-PID-TOKEN.claim`` and
   holds an exclusive ``flock`` on it for as long as it runs.
2. **Claim.** Before submitting a point it reads the rows appended since its last look,
   then the other claim files. A claim file whose ``flock`` it can take belongs to a driver
   that is gone (the kernel drops a process's locks when it dies, SIGKILL included): that
   file is deleted and its points are free again. The points listed in the other (live)
   claim files are skipped; the first free points not yet finished are appended to its own
   claim file and submitted.
3. **Record.** A finished run's row is appended to the results file (``store``).
4. **Release.** On exit — normal, exception or Ctrl-C — the driver deletes its claim file
   (and the directory when it is empty).

A crash needs no heartbeat and no expiry: the lock is the liveness. On NFS, where ``flock``
is emulated by NFS locks, a dead client's locks are released when its lease expires (NFSv4:
about 90 s); the guarantees then hold after that delay. Where ``fcntl`` does not exist
(Windows) there are no locks and no claims: one driver per results file.

A point counts as finished for a driver when it has an ``ok`` row, when it has any row and
``retry_failed`` is off, or when a row for it was appended after the driver started (so a
retry is never run twice by two retrying drivers).
"""

from __future__ import annotations

import os
import re
import socket
import stat
from collections import deque
from datetime import datetime, timezone
from pathlib import Path

from sigprop.experiments.sweep.store import (
    HAVE_FLOCK,
    encode_row,
    lock,
    open_results,
    read_rows,
    repair_tail,
    unlock,
    write_line,
)
from sigprop.validate import InvalidInput

__all__ = ["Ledger", "claims_dir"]

_KEY_LINE = re.compile(rb"^[0-9a-f]{16}$")
#: Most claim files one scan looks at (a directory with more is refused).
MAX_CLAIM_FILES = 4096
#: Largest claim file read (bytes): every point of a maximal grid, one 17-byte line each.
MAX_CLAIM_BYTES = 4 << 20


def claims_dir(path: Path) -> Path:
    """The directory of the claim files of results file ``path``."""
    return path.with_name(path.name + ".claims")


class _Locked:
    def __init__(self, fd: int):
        self.fd = fd

    def __enter__(self):
        lock(self.fd)

    def __exit__(self, *exc):
        unlock(self.fd)


class Ledger:
    """One driver's view of a results file: what is finished, what it may claim.

    Use as a context manager; ``keyed`` is the sweep's ``[(key, params), ...]`` in grid
    order. :meth:`claim` returns up to ``n`` points to run, :meth:`record` appends a row.
    """

    def __init__(self, path: str | os.PathLike, keyed, *, retry_failed: bool = False):
        self.path = Path(path)
        self.params = dict(keyed)
        self.retry_failed = retry_failed
        self.fd: int | None = None
        self.offset = 0
        self.start: int | None = None  # file offset when this driver started
        self.has_row: set[str] = set()
        self.has_ok: set[str] = set()
        self.fresh: set[str] = set()  # rows appended after the start
        self.mine: set[str] = set()
        self.busy: set[str] = set()  # claimed by other live drivers, at the last look
        self.todo = deque(k for k, _ in keyed)
        self.parked: list[str] = []  # examined, busy elsewhere: looked at again first
        self.skipped = 0
        self.own_fd: int | None = None
        self.own_path: Path | None = None
        self.seen: dict[str, tuple[int, int, set[str]]] = {}  # name -> (inode, offset, keys)

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Ledger:
        self.fd = open_results(self.path)
        try:
            with _Locked(self.fd):
                repair_tail(self.fd, self.path)
                self._read_new()
                self.start = self.offset
                self.skipped = sum(1 for k in self.params if self.finished(k))
                if HAVE_FLOCK:
                    self._register()
        except BaseException:
            os.close(self.fd)
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self.own_fd is not None:
                with _Locked(self.fd):
                    os.unlink(self.own_path)
                    os.close(self.own_fd)
                    self.own_fd = None
                    folder = self.own_path.parent
                    if not os.listdir(folder):
                        os.rmdir(folder)
        finally:
            os.close(self.fd)

    def _register(self) -> None:
        folder = claims_dir(self.path)
        try:
            os.mkdir(folder, 0o755)
        except FileExistsError:
            pass
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise InvalidInput(f"{folder} exists and is not a directory")
        host = re.sub(r"[^A-Za-z0-9.-]", "_", socket.gethostname())[:64]
        name = f"{host}-{os.getpid()}-{os.urandom(4).hex()}.claim"
        self.own_path = folder / name
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
        self.own_fd = os.open(self.own_path, flags, 0o644)
        lock(self.own_fd)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        os.write(self.own_fd, f"# sigprop sweep {host}:{os.getpid()} {started}\n".encode())

    # ------------------------------------------------------------------ state

    def finished(self, key: str) -> bool:
        return (
            key in self.has_ok
            or key in self.fresh
            or (not self.retry_failed and key in self.has_row)
        )

    def _read_new(self) -> None:
        size = os.fstat(self.fd).st_size
        if size < self.offset:
            raise InvalidInput(f"{self.path} was truncated while the sweep was running")
        for row, end in read_rows(self.fd, self.offset, str(self.path)):
            self.offset = end
            key = row["key"]
            if key in self.params:
                self.has_row.add(key)
                if row.get("status") == "ok":
                    self.has_ok.add(key)
                if self.start is not None:
                    self.fresh.add(key)

    def _scan_claims(self) -> None:
        """Refresh :attr:`busy` from the live claim files; delete the dead ones."""
        if self.own_path is None:
            return
        folder = self.own_path.parent
        names = [n for n in os.listdir(folder) if n.endswith(".claim") and n != self.own_path.name]
        if len(names) > MAX_CLAIM_FILES:
            raise InvalidInput(f"{folder} holds more than {MAX_CLAIM_FILES} claim files")
        busy: set[str] = set()
        for name in names:
            flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
            try:
                fd = os.open(folder / name, flags | getattr(os, "O_CLOEXEC", 0))
            except FileNotFoundError:
                continue
            try:
                info = os.fstat(fd)
                if not stat.S_ISREG(info.st_mode):
                    continue
                if lock(fd, blocking=False):  # its driver is gone: its points are free
                    os.unlink(folder / name)
                    self.seen.pop(name, None)
                    continue
                ino, offset, keys = self.seen.get(name, (info.st_ino, 0, set()))
                if ino != info.st_ino:
                    offset, keys = 0, set()
                data = os.pread(fd, max(0, min(MAX_CLAIM_BYTES, info.st_size) - offset), offset)
                complete = data[: data.rfind(b"\n") + 1]
                keys.update(k.decode() for k in complete.split(b"\n") if _KEY_LINE.match(k))
                self.seen[name] = (info.st_ino, offset + len(complete), keys)
                busy |= keys
            finally:
                os.close(fd)
        for name in set(self.seen) - set(names):
            del self.seen[name]
        self.busy = busy

    # ------------------------------------------------------------------ claiming

    def claim(self, n: int) -> list[tuple[str, dict]]:
        """Up to ``n`` unfinished points no other live driver holds, now held by this one."""
        if n <= 0:
            return []
        with _Locked(self.fd):
            self._read_new()
            self._scan_claims()
            picked, parked = [], []
            for key in self.parked:
                if self.finished(key) or key in self.mine:
                    continue
                if key in self.busy or len(picked) >= n:
                    parked.append(key)
                else:
                    picked.append(key)
            while len(picked) < n and self.todo:
                key = self.todo.popleft()
                if self.finished(key) or key in self.mine:
                    continue
                if key in self.busy:
                    parked.append(key)
                else:
                    picked.append(key)
            self.parked = parked
            if picked and self.own_fd is not None:
                os.write(self.own_fd, "".join(f"{k}\n" for k in picked).encode())
            self.mine.update(picked)
        return [(k, self.params[k]) for k in picked]

    def record(self, row: dict) -> None:
        """Append ``row`` to the results file."""
        data = encode_row(row)
        with _Locked(self.fd):
            repair_tail(self.fd, self.path)
            write_line(self.fd, data)
        self.fresh.add(row["key"])

    def elsewhere(self) -> int:
        """Points of this sweep not finished and held by another live driver (a fresh look)."""
        with _Locked(self.fd):
            self._read_new()
            self._scan_claims()
        return sum(1 for k in self.busy if k in self.params and not self.finished(k))
