"""Hostile sweep configs, results files, output paths and schedulers: every one refused.

Each case runs ``sigprop sweep CONFIG --out OUT`` in a forked child (``harness``): exit 2,
one line on stderr, no traceback, no canary, bounded memory and time. The grids use the
theory-only ``mean_field`` run, or fail validation before anything runs, so a case costs
milliseconds. Then: hypothesis fuzzing of the config parser, the config checks and the
results-line parser (only ``InvalidInput`` ever escapes), and the local workers of a
SIGKILLed driver.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigprop.experiments.sweep import Sweep, parse_config
from sigprop.experiments.sweep.config import MAX_CONFIG_BYTES
from sigprop.experiments.sweep.grid import MAX_POINTS
from sigprop.experiments.sweep.store import parse_row
from sigprop.validate import InvalidInput
from tests.security.harness import assert_refused

ROOT = Path(__file__).resolve().parents[2]
GOOD = 'run = "mean_field"\n[fixed]\nsigma_b = 0.1\n[grid]\nsigma_w = [1.0, 1.2]\n'


def _with(grid: str = "sigma_w = [1.0]", fixed: str = "sigma_b = 0.1", head: str = "") -> str:
    return f'run = "mean_field"\n{head}\n[fixed]\n{fixed}\n[grid]\n{grid}\n'


# name -> config text (str) or bytes; refused by the config checks, before anything runs
CONFIGS = {
    # the cases
    "arrays nested 5000 deep": "a = " + "[" * 5000 + "]" * 5000 + "\n",
    "run = os:system": 'run = "os:system"\n[fixed]\ncommand = "touch {canary}"\n',
    "grid is a number": 'run = "mean_field"\ngrid = 5\n',
    "grid is an array": 'run = "mean_field"\ngrid = [1, 2]\n',
    "fixed is a string": 'run = "mean_field"\nfixed = "x"\n',
    "summary is a string": _with(head='summary = "chi1"'),
    "summary holds numbers": _with(head="summary = [1, 2]"),
    "workers is a string": _with(head='workers = "2"'),
    "workers is negative": _with(head="workers = -1"),
    "workers is a float": _with(head="workers = 1.5"),
    "workers is a boolean": _with(head="workers = true"),
    "not valid TOML": 'run = "mean_field"\nsigma = \n',
    # ours
    "larger than the size bound": "#" * 80 + "\n" * (MAX_CONFIG_BYTES // 80 + 10),
    "binary garbage": bytes(range(256)) * 64,
    "NUL byte": b'run = "mean_field"\x00\n',
    "invalid UTF-8 in a string": b'run = "mean_\xff_field"\n',
    "empty file": "",
    "unknown key": 'run = "mean_field"\ngird = {}\n',
    "1e30 grid points": 'run = "mean_field"\n[grid]\n'
    + "".join(f"p{i} = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n" for i in range(30)),
    "parameter name with an escape": _with(grid='"sigma\\u001b[31m" = [1.0]'),
    "parameter name not an identifier": _with(grid='"sigma w" = [1.0]'),
    "registered run by module path": 'run = "sigprop.experiments.runs:mean_field"\n',
    "builtins:exec": 'run = "builtins:exec"\n[fixed]\nsource = "open({canary!r}, \'w\')"\n',
    "run is a number": "run = 5\n",
    "run is empty": 'run = ""\n',
    "run is 10000 characters": f'run = "{"x" * 10_000}"\n',
    "no run": "[grid]\nsigma_w = [1.0]\n",
    "name with a terminal escape": _with(head='name = "\\u001b]0;pwned\\u0007"'),
    "name is a table": _with(head="name = { a = 1 }"),
    "out in the config is absolute": _with(head='out = "/tmp/sigprop-sweep-abs.jsonl"'),
    "out in the config climbs out": _with(head='out = "../escaped.jsonl"'),
    "out in the config is a number": _with(head="out = 3"),
    "grid value is a datetime": _with(grid="sigma_w = [1979-05-27T07:32:00Z]"),
    "grid list is empty": _with(grid="sigma_w = []"),
    "grid value is a scalar": _with(grid="sigma_w = 1.0"),
    "parameter both in grid and fixed": _with(fixed="sigma_w = 1.0"),
    "reserved $float table": _with(grid='sigma_w = [{ "$float" = "nan" }]'),
    "integer beyond 64 bits": _with(grid="sigma_w = [123456789012345678901234567890]"),
    "dotted keys 5000 deep": _with(fixed="a" + ".b" * 5000 + " = 1"),
    "inline tables 5000 deep": "a = " + "{ b = " * 5000 + "1" + " }" * 5000 + "\n",
    "workers beyond the bound": _with(head="workers = 100000"),
    "summary of 1000 names": _with(head="summary = [" + '"x", ' * 1000 + "]"),
    "unknown parameter of the run": _with(grid="sigmaw = [1.0]"),
}


@pytest.fixture
def canary(tmp_path):
    return tmp_path / "CANARY"


def _config(tmp_path, text: str | bytes, canary: Path) -> Path:
    path = tmp_path / "s.toml"
    if isinstance(text, str):
        path.write_text(
            text.replace("{canary}", str(canary)).replace("{canary!r}", repr(str(canary)))
        )
    else:
        path.write_bytes(text)
    return path


@pytest.mark.parametrize("name", list(CONFIGS))
def test_hostile_config_is_refused(name, tmp_path, canary):
    config = _config(tmp_path, CONFIGS[name], canary)
    out = tmp_path / "r.jsonl"
    start = time.monotonic()
    assert_refused(["sweep", str(config), "--out", str(out), "--no-progress"], canary=canary,
                   cwd=tmp_path, timeout=10)  # fmt: skip
    assert time.monotonic() - start < 10
    assert not out.exists() or out.stat().st_size == 0  # nothing ran
    assert not (tmp_path / "escaped.jsonl").exists()


def test_config_out_cannot_leave_the_directory(tmp_path, canary):
    # without --out the config's own 'out' would be used: refused before writing anything
    for out in ('"/tmp/sigprop-sweep-abs.jsonl"', '"../escaped.jsonl"', '"~/x.jsonl"'):
        config = _config(tmp_path, _with(head=f"out = {out}"), canary)
        assert_refused(["sweep", str(config), "--no-progress"], cwd=tmp_path, match="relative")
    assert not Path("/tmp/sigprop-sweep-abs.jsonl").exists()
    assert not (tmp_path.parent / "escaped.jsonl").exists()


def test_module_path_needs_the_opt_in_and_then_a_real_path(tmp_path, canary):
    config = _config(tmp_path, 'run = ".os:system"\n', canary)
    assert_refused(["sweep", str(config), "--allow-import", "--no-progress"], cwd=tmp_path,
                   match="not a 'package.module:function' path")  # fmt: skip
    config = _config(tmp_path, 'run = "os:system"\n', canary)
    out = assert_refused(["sweep", str(config), "--no-progress"], cwd=tmp_path)
    assert "--allow-import" in out.stderr


# ------------------------------------------------------------------ config file itself


def test_toml_errors_name_the_position(tmp_path, canary):
    config = _config(tmp_path, 'run = "mean_field"\n[grid]\nsigma_w = [1.0,\n', canary)
    assert_refused(["sweep", str(config), "--no-progress"], cwd=tmp_path,
                   match="not valid TOML")  # fmt: skip
    with pytest.raises(InvalidInput, match=r"line 2, column 9"):
        parse_config('run = "mean_field"\nsigma = \n')


def test_config_that_is_a_fifo_a_directory_or_a_device(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)  # opening it for reading would wait for a writer forever
    for path in (fifo, tmp_path, "/dev/zero"):
        assert_refused(["sweep", str(path), "--no-progress"], cwd=tmp_path, timeout=10,
                       match="not a regular file")  # fmt: skip


# ------------------------------------------------------------------ output paths


def test_one_line_json_report_is_refused_and_left_intact(tmp_path, canary):
    config = _config(tmp_path, GOOD, canary)
    report = tmp_path / "report.json"
    report.write_bytes(b'{"accuracy": 0.97, "rows": [1, 2, 3]}')  # no final newline
    assert_refused(["sweep", str(config), "--out", str(report), "--workers", "0",
                    "--no-progress"], match="not a results file")  # fmt: skip
    assert report.read_bytes() == b'{"accuracy": 0.97, "rows": [1, 2, 3]}'
    other = tmp_path / "notes.txt"
    other.write_bytes(b"hello\nworld\n")
    assert_refused(["sweep", str(config), "--out", str(other), "--no-progress"])
    assert other.read_bytes() == b"hello\nworld\n"


def _out_cases(tmp_path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link.jsonl"
    link.symlink_to("/dev/full")
    deep = tmp_path / "deep.jsonl"
    deep.write_bytes(
        b'{"key": "a", "status": "ok", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
    )
    bigint = tmp_path / "bigint.jsonl"
    bigint.write_bytes(b'{"key": "a", "status": "ok", "x": ' + b"9" * 100_000 + b"}\n")
    nan = tmp_path / "nan.jsonl"
    nan.write_bytes(b'{"key": "a", "status": "ok", "x": NaN}\n')
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b'{"key": "\xff\xfe", "status": "ok"}\n')
    long_line = tmp_path / "long.jsonl"
    with open(long_line, "wb") as fh:  # sparse: 20 MiB of one line, no newline
        fh.truncate(20 << 20)
    return {
        "/dev/full": "/dev/full",
        "/dev/zero": "/dev/zero",
        "/dev/null": "/dev/null",
        "a FIFO": str(fifo),
        "a symlink to /dev/full": str(link),
        "a directory": str(tmp_path),
        "a file under /proc": "/proc/version",
        "a missing directory": str(tmp_path / "missing" / "r.jsonl"),
        "a row nested 100000 deep": str(deep),
        "an integer of 100000 digits": str(bigint),
        "a NaN literal": str(nan),
        "invalid UTF-8": str(binary),
        "one line of 20 MiB": str(long_line),
    }


def test_unusable_results_files_are_refused(tmp_path, canary):
    config = _config(tmp_path, GOOD, canary)
    for name, out in _out_cases(tmp_path).items():
        before = os.stat(out).st_size if os.path.isfile(out) else None
        outcome = assert_refused(["sweep", str(config), "--out", out, "--workers", "0",
                                  "--no-progress"], timeout=10)  # fmt: skip
        assert outcome.status == 2, name
        if before is not None:
            assert os.stat(out).st_size == before, f"{name}: the file was changed"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through file permissions")
def test_unwritable_results_file(tmp_path, canary):
    config = _config(tmp_path, GOOD, canary)
    out = tmp_path / "ro.jsonl"
    out.write_text("")
    out.chmod(0o444)
    assert_refused(["sweep", str(config), "--out", str(out), "--no-progress"])


def test_bad_command_line_values(tmp_path, canary):
    config = _config(tmp_path, GOOD, canary)
    out = str(tmp_path / "r.jsonl")
    for extra, match in [
        (["--workers", "-1"], "workers"),
        (["--workers", "100000"], "at most 256"),
        (["--threads", "0"], "torch_threads"),
        (["--threads", "100000"], "torch_threads"),
        (["--max-runs", "-3"], "max_runs"),
        (["--connect-timeout", "0", "--scheduler", "tcp://127.0.0.1:1"], "connect_timeout"),
        (["--connect-timeout", "nan", "--scheduler", "tcp://127.0.0.1:1"], "connect_timeout"),
    ]:
        assert_refused(["sweep", str(config), "--out", out, "--no-progress", *extra],
                       match=match)  # fmt: skip


# ------------------------------------------------------------------ schedulers


@pytest.fixture
def bad_server():
    """A TCP server on 127.0.0.1 that accepts and then either sends garbage or says nothing."""
    servers, conns = [], []

    def start(reply: bytes) -> int:
        srv = socket.socket()
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        servers.append(srv)

        def serve():
            while True:
                try:
                    conn, _ = srv.accept()
                except OSError:
                    return
                conns.append(conn)
                if reply:
                    conn.sendall(reply)

        threading.Thread(target=serve, daemon=True).start()
        return srv.getsockname()[1]

    yield start
    for s in servers + conns:
        s.close()


@pytest.mark.parametrize(
    "address",
    ["not an address!!", "tcp://", "tcp://host:99999", "tcp://a b:1", "ucx://127.0.0.1:1",
     "inproc://x", "tcp://[::1:1", "x" * 1000, "tcp://127.0.0.1:1/../x"],
)  # fmt: skip
def test_garbage_scheduler_addresses(address, tmp_path, canary):
    config = _config(tmp_path, GOOD, canary)
    assert_refused(["sweep", str(config), "--scheduler", address, "--no-progress"],
                   cwd=tmp_path, timeout=5, match="scheduler must be an address")  # fmt: skip
    assert not (tmp_path / "s.jsonl").exists()


def test_a_port_that_speaks_garbage(tmp_path, canary, bad_server):
    pytest.importorskip("distributed")
    config = _config(tmp_path, GOOD, canary)
    # 0xff...: a first frame of 2**64 - 1 bytes, what made the client try to allocate 3 EiB
    for reply in (
        b"\xff" * 64,
        b"HTTP/1.1 200 OK\r\n\r\n" * 4,
        b"\x10" + b"\x00" * 7 + b"\x00" * 16,
    ):
        port = bad_server(reply)
        assert_refused(["sweep", str(config), "--scheduler", f"tcp://127.0.0.1:{port}",
                        "--connect-timeout", "2", "--no-progress"], cwd=tmp_path, timeout=10,
                       match="Dask")  # fmt: skip
    assert not (tmp_path / "s.jsonl").exists()


def test_a_port_that_says_nothing(tmp_path, canary, bad_server):
    pytest.importorskip("distributed")
    config = _config(tmp_path, GOOD, canary)
    port = bad_server(b"")
    out = assert_refused(["sweep", str(config), "--scheduler", f"127.0.0.1:{port}",
                          "--connect-timeout", "1", "--no-progress"], cwd=tmp_path, timeout=10,
                         match=f"127.0.0.1:{port}")  # fmt: skip
    assert out.seconds < 8


def test_a_closed_port(tmp_path, canary):
    pytest.importorskip("distributed")
    config = _config(tmp_path, GOOD, canary)
    assert_refused(["sweep", str(config), "--scheduler", "tcp://127.0.0.1:1", "--no-progress"],
                   cwd=tmp_path, timeout=10, match="cannot connect")  # fmt: skip


# ------------------------------------------------------------------ fuzzing


@given(st.text(max_size=300) | st.binary(max_size=300))
def test_config_parser_raises_only_invalid_input(data):
    try:
        parse_config(data)
    except InvalidInput:
        pass


_NAMES = st.sampled_from(["sigma_w", "sigma_b", "activation", "seed", "a b", "", "$float"])
_SCALARS = (
    st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.datetimes()
    | st.dates()
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(_NAMES | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=12,
)
_FIELDS = {
    "run": st.sampled_from(["mean_field", "train_pruned", "os:system", "x:y", ""]) | _VALUES,
    "name": st.text(max_size=10) | _VALUES,
    "grid": st.dictionaries(_NAMES, st.lists(_VALUES, max_size=4), max_size=4) | _VALUES,
    "fixed": st.dictionaries(_NAMES, _VALUES, max_size=4) | _VALUES,
    "summary": st.lists(st.text(max_size=6), max_size=3) | _VALUES,
    "out": st.sampled_from(["r.jsonl", "/abs.jsonl", "../up.jsonl"]) | _VALUES,
    "workers": st.integers(-3, 300) | _VALUES,
}
_CONFIGS = st.fixed_dictionaries({}, optional=_FIELDS) | st.dictionaries(
    st.text(max_size=6), _VALUES, max_size=4
)


@given(_CONFIGS, st.booleans())
def test_config_checks_raise_only_invalid_input(config, allow_import):
    try:
        sweep = Sweep.from_dict(config, allow_import=allow_import)
    except InvalidInput:
        return
    assert sweep.size() <= MAX_POINTS
    assert len(sweep.points()) == sweep.size()
    sweep.to_dict()


@given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_results_line_parser_raises_only_invalid_input(line):
    try:
        row = parse_row(line, "fuzz")
    except InvalidInput:
        return
    assert row is None or (isinstance(row, dict) and isinstance(row["key"], str))


# ------------------------------------------------------------------ workers of a killed driver


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_local_workers_die_with_a_killed_driver(tmp_path):
    config = tmp_path / "slow.toml"
    config.write_text(textwrap.dedent(
        """
        run = "tests.experiments.sweep_runs:nap"
        [fixed]
        seconds = 120
        [grid]
        i = [0, 1, 2, 3]
        """
    ))  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    driver = subprocess.Popen(
        [sys.executable, "-m", "sigprop", "sweep", str(config), "--out", str(tmp_path / "r.jsonl"),
         "--workers", "2", "--allow-import", "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        workers = []
        while time.monotonic() < deadline and len(workers) < 2:
            time.sleep(0.1)
            workers = [p for p in _children(driver.pid)
                       if "spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")]  # fmt: skip
        assert len(workers) == 2, "the driver did not start its two workers"
        time.sleep(1.0)  # the workers are inside their first 120 s run now
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.1)
        assert not [p for p in workers if _alive(p)], "a worker outlived its killed driver"
    finally:
        if driver.poll() is None:
            driver.kill()
