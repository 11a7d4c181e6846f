"""Local executors: the calling process, or worker processes that die with their driver.

An executor has ``name``, ``window()`` (how many points to keep in flight),
``submit(key, params) -> handle``, ``wait(handles) -> [(handle, row or exception), ...]`` (at
least one finished handle) and ``close(cancel)``.

Worker processes (``concurrent.futures.ProcessPoolExecutor``, spawn start method) never
outlive the driver, even when it is killed with SIGKILL and cannot clean up: each worker
asks the Linux kernel to send it SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``),
and elsewhere watches its parent's pid from a thread. A worker whose parent died before it
got that far exits at once.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from sigprop.experiments.sweep.execute import execute_point

__all__ = ["InlineExecutor", "ProcessExecutor", "die_with_parent"]

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os._exit(1)


def die_with_parent(parent_pid: int) -> None:
    """Initializer of a local worker: end this process when the driver ``parent_pid`` ends."""
    armed = False
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
        except (OSError, AttributeError):  # no usable libc: fall back to the watchdog
            armed = False
    if not armed:
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # the driver died before the signal was armed
        os._exit(1)


class InlineExecutor:
    """Runs each point in the calling process when it is submitted."""

    name = "inline"

    def __init__(self, run: str, *, allow_import: bool = False):
        self.run, self.allow_import = run, allow_import
        self.done: dict[object, dict] = {}

    def window(self) -> int:
        return 1

    def submit(self, key: str, params: dict) -> object:
        handle = object()
        self.done[handle] = execute_point(self.run, params, key, None, self.allow_import)
        return handle

    def wait(self, handles) -> list:
        return [(h, self.done.pop(h)) for h in list(handles) if h in self.done]

    def close(self, cancel: bool = False) -> None:
        self.done.clear()


class ProcessExecutor:
    """``n`` spawned worker processes, ``torch_threads`` torch threads each."""

    def __init__(self, run: str, n: int, torch_threads, *, allow_import: bool = False):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.run, self.torch_threads, self.allow_import = run, torch_threads, allow_import
        self.name = f"processes:{n}"
        self.n = n
        self.pool = ProcessPoolExecutor(
            max_workers=n,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=die_with_parent,
            initargs=(os.getpid(),),
        )

    def window(self) -> int:
        """Points kept submitted: two per worker, so none waits for the next claim."""
        return 2 * self.n

    def submit(self, key: str, params: dict):
        return self.pool.submit(
            execute_point, self.run, params, key, self.torch_threads, self.allow_import
        )

    def wait(self, handles) -> list:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(list(handles), return_when=FIRST_COMPLETED)
        return [(f, f.exception() or f.result()) for f in done]

    def close(self, cancel: bool = False) -> None:
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)
