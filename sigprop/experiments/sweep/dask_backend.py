"""The Dask executor: grid points sent to a ``dask.distributed`` cluster.

An address is checked before anything connects to it: its syntax (``tcp://host:port``,
``tls://host:port`` or ``host:port``; the port defaults to 8786), then a probe — a plain
TCP connection with a short timeout that reads the scheduler's opening handshake, at most
:data:`MAX_HANDSHAKE_BYTES`, and checks its framing (a Dask comm sends a length-prefixed
msgpack table first, unasked). A port that does not answer, or answers with anything else,
is refused in seconds with one line; only then does ``distributed.Client`` connect (with the
same timeout). The probe guards against a wrong address, not against a hostile scheduler: a
Dask scheduler sends pickled data that the client loads, so ``--scheduler`` must name a
cluster you trust. For ``tls://`` only the TCP connection is probed (the handshake is
encrypted).

``dask.distributed`` is imported only here, only when a scheduler is given.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time

from sigprop.experiments.sweep.execute import execute_point
from sigprop.validate import InvalidInput, InvalidType

__all__ = ["MAX_HANDSHAKE_BYTES", "DaskExecutor", "check_address", "probe_scheduler"]

#: Largest opening handshake the probe reads (a scheduler's is about 60 bytes).
MAX_HANDSHAKE_BYTES = 1 << 16
#: Default Dask scheduler port.
DEFAULT_PORT = 8786

_ADDRESS = re.compile(
    r"(?:(?P<scheme>tcp|tls)://)?"
    r"(?P<host>\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
_FRAME = struct.Struct("Q")  # distributed.comm.tcp frames: native unsigned 64-bit lengths


def check_address(address) -> str:
    """A scheduler address, normalised to ``scheme://host:port``; refused unless it is
    ``[tcp|tls://]host[:port]`` with a host name, an IPv4 or a bracketed IPv6 address."""
    if not isinstance(address, str):
        raise InvalidType(f"a Dask scheduler address is a string, got {type(address).__name__}")
    match = _ADDRESS.fullmatch(address) if len(address) <= 300 else None
    port = int(match["port"]) if match and match["port"] else DEFAULT_PORT
    if match is None or not 0 < port < 65536:
        raise InvalidInput(
            f"scheduler must be an address like tcp://host:8786, got {address!r:.100}"
        )
    return f"{match['scheme'] or 'tcp'}://{match['host']}:{port}"


def _recv_exactly(sock: socket.socket, n: int, deadline: float, address: str) -> bytes:
    chunks, left = [], n
    while left:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"the Dask scheduler at {address} did not answer in time")
        sock.settimeout(remaining)
        chunk = sock.recv(min(left, 1 << 16))
        if not chunk:
            raise InvalidInput(f"{address} closed the connection: not a Dask scheduler")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def probe_scheduler(address: str, timeout: float) -> None:
    """Connect to ``address`` (from :func:`check_address`) and check that it speaks Dask's
    protocol, reading at most :data:`MAX_HANDSHAKE_BYTES` within ``timeout`` seconds."""
    scheme, rest = address.split("://", 1)
    host, _, port = rest.rpartition(":")
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OSError(f"cannot connect to the Dask scheduler at {address}: {reason}") from None
    with sock:
        if scheme != "tcp":
            return
        try:
            (size,) = _FRAME.unpack(_recv_exactly(sock, _FRAME.size, deadline, address))
            if not 2 * _FRAME.size <= size <= MAX_HANDSHAKE_BYTES:
                raise InvalidInput(
                    f"{address} does not speak the Dask protocol (a first message of {size} bytes)"
                )
            body = _recv_exactly(sock, size, deadline, address)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise OSError(f"no Dask handshake from {address}: {reason}") from None
    (n_frames,) = _FRAME.unpack_from(body)
    head = _FRAME.size * (1 + n_frames)
    lengths = struct.unpack_from(f"{n_frames}Q", body, _FRAME.size) if head <= size else ()
    # the handshake is one msgpack table: fixmap (0x80-0x8f), map16 (0xde) or map32 (0xdf)
    first = body[head] if lengths and head + sum(lengths) <= size and lengths[0] else None
    if first is None or not (0x80 <= first <= 0x8F or first in (0xDE, 0xDF)):
        raise InvalidInput(f"{address} does not speak the Dask protocol")


class DaskExecutor:
    """Runs points on a Dask cluster: an address (connected here, closed on ``close``) or a
    connected ``distributed.Client`` (left open)."""

    def __init__(self, run, scheduler, torch_threads, *, allow_import=False, timeout=10.0):
        self.run, self.torch_threads, self.allow_import = run, torch_threads, allow_import
        self.own = isinstance(scheduler, str)
        if self.own:  # checked and probed before distributed is even imported
            address = check_address(scheduler)
            probe_scheduler(address, timeout)
        try:
            from distributed import Client, as_completed
        except ImportError:  # pragma: no cover - dask is an optional extra
            raise InvalidInput(
                "a Dask scheduler needs dask.distributed: pip install 'sigprop[dask]'"
            ) from None
        if self.own:
            self.client = Client(address, timeout=timeout, set_as_default=False)
        elif isinstance(scheduler, Client):
            self.client = scheduler
        else:
            raise InvalidType(
                f"scheduler must be an address or a distributed.Client, got "
                f"{type(scheduler).__name__}"
            )
        self.name = f"dask:{self.client.scheduler.address}"
        self.futures: set = set()
        self.completed = as_completed(loop=self.client.loop)

    def window(self) -> int:
        """How many points to keep submitted: twice the cluster's threads, at least 4."""
        return max(4, 2 * sum(self.client.nthreads().values()))

    def submit(self, key: str, params: dict):
        fut = self.client.submit(
            execute_point,
            self.run,
            params,
            key,
            self.torch_threads,
            self.allow_import,
            pure=False,
            key=f"sigprop-run-{key}-{os.urandom(4).hex()}",
        )
        self.futures.add(fut)
        self.completed.add(fut)
        return fut

    def wait(self, handles) -> list:
        done = [next(self.completed)]
        done += self.completed.next_batch(block=False)
        out = []
        for fut in done:
            self.futures.discard(fut)
            if fut.status == "finished":
                out.append((fut, fut.result()))
            elif fut.status == "error":
                out.append((fut, fut.exception()))
            else:  # cancelled or lost with the cluster
                out.append((fut, RuntimeError(f"the Dask task ended as {fut.status!r}")))
        return out

    def close(self, cancel: bool = False) -> None:
        try:
            if cancel and self.futures:
                self.client.cancel(list(self.futures))
        finally:
            if self.own:
                self.client.close()
