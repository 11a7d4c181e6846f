"""Run one ``sigprop`` command on hostile input and check that it is refused cleanly.

Every case of the hostile-input corpus goes through :func:`run_cli`: the command runs in a
forked child of the test process (sigprop and torch are imported once, so a case costs
milliseconds, not an interpreter start), with stdout/stderr captured, a wall-clock limit and
an address-space safety net. :func:`assert_refused` then asserts what the threat model in
``docs/security.md`` promises for every refused input:

- exit status 2;
- exactly one line on stderr, no traceback;
- no canary file (a payload that runs code writes one);
- peak resident memory under ``rss_limit`` above what the process held at the fork (the
  child's ``ru_maxrss`` minus the parent's resident set then: the pages it inherits are
  the test process's, whatever earlier tests in that worker loaded, not the command's);
- finished within ``timeout`` seconds.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

#: The default peak-RSS bound of a refused input (the issue's "under 1 GiB").
RSS_LIMIT = 1 << 30
#: Address-space cap of the child: a runaway allocation fails there instead of taking the
#: machine down (well above RSS_LIMIT: torch maps more address space than it touches).
AS_LIMIT = 8 << 30


@dataclasses.dataclass(frozen=True)
class Outcome:
    status: int | None  # exit status, or None if killed at the time limit
    stdout: str
    stderr: str
    maxrss: int  # bytes above the resident set at the fork
    seconds: float

    @property
    def stderr_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _resident_bytes() -> int:
    """This process's resident set now (Linux ``/proc/self/statm``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def run_cli(
    argv: Sequence[str],
    *,
    timeout: float = 20.0,
    cwd: str | os.PathLike | None = None,
    env: dict[str, str] | None = None,
    stdin: str | os.PathLike | None = None,
) -> Outcome:
    """Run ``sigprop.cli.main(argv)`` in a forked child and report what happened."""
    import sigprop.cli  # imported here, before the fork, so every child shares it

    with tempfile.TemporaryDirectory(prefix="sigprop-harness-") as tmp:
        out_path, err_path = Path(tmp, "stdout"), Path(tmp, "stderr")
        baseline = _resident_bytes()
        start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # child
            code = 99
            try:
                os.setpgid(0, 0)  # its own group, so a timeout kills what it started too
                if "torch" in sys.modules:
                    # the parent's OpenMP thread team does not survive the fork (libgomp is
                    # not fork-safe: a parallel region in the child can wait forever on it)
                    sys.modules["torch"].set_num_threads(1)
                resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))
                if cwd is not None:
                    os.chdir(cwd)
                if env:
                    os.environ.update(env)
                fd_in = os.open(stdin if stdin is not None else os.devnull, os.O_RDONLY)
                os.dup2(fd_in, 0)
                for fd, path in ((1, out_path), (2, err_path)):
                    f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    os.dup2(f, fd)

                sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
                code = int(sigprop.cli.main(list(argv)))
            except SystemExit as exc:  # argparse errors
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:  # noqa: BLE001 - reported as a traceback on stderr
                import traceback

                traceback.print_exc()
                code = 98
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        status = None
        deadline = start + timeout
        rusage = None
        while True:
            done, wstatus, rusage = os.wait4(pid, os.WNOHANG)
            if done:
                status = os.waitstatus_to_exitcode(wstatus)
                break
            if time.monotonic() > deadline:
                os.killpg(pid, signal.SIGKILL)
                _, _, rusage = os.wait4(pid, 0)
                break
            time.sleep(0.005)
        seconds = time.monotonic() - start
        return Outcome(
            status=status,
            stdout=out_path.read_text(errors="replace"),
            stderr=err_path.read_text(errors="replace"),
            maxrss=max(0, int(rusage.ru_maxrss) * 1024 - baseline),
            seconds=seconds,
        )


def assert_refused(
    argv: Sequence[str],
    *,
    canary: str | os.PathLike | None = None,
    timeout: float = 20.0,
    rss_limit: int = RSS_LIMIT,
    match: str | None = None,
    **kwargs,
) -> Outcome:
    """Assert that ``sigprop argv`` refuses its input as the threat model promises."""
    out = run_cli(argv, timeout=timeout, **kwargs)
    where = f"sigprop {' '.join(map(str, argv))}"
    assert out.status is not None, f"{where}: still running after {timeout} s"
    assert "Traceback" not in out.stderr, f"{where}: traceback\n{out.stderr}"
    assert out.status == 2, f"{where}: exit {out.status}, stderr {out.stderr!r}"
    assert len(out.stderr_lines) == 1, f"{where}: stderr is not one line: {out.stderr!r}"
    if canary is not None:
        assert not Path(canary).exists(), f"{where}: the canary fired (code ran)"
    assert out.maxrss < rss_limit, f"{where}: peak RSS {out.maxrss / 2**20:.0f} MiB"
    if match is not None:
        assert match in out.stderr, f"{where}: {match!r} not in {out.stderr!r}"
    return out
