"""Sweeps sharing a results file, killed sweeps, non-finite grids, the results-file tail,
and the run configuration of train_pruned."""

import inspect
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigprop.experiments.runs import TrainPrunedConfig, get_run, train_pruned
from sigprop.experiments.sweep import (
    Sweep,
    append_row,
    load_results,
    run_key,
    run_sweep,
)
from sigprop.experiments.sweep.claims import claims_dir
from sigprop.experiments.sweep.keys import canonical, decode_value, encode_value
from sigprop.validate import InvalidInput, InvalidType

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _nap_config(tmp_path, seconds, n, name="nap.toml"):
    path = tmp_path / name
    path.write_text(
        textwrap.dedent(
            f"""
            run = "tests.experiments.sweep_runs:nap"
            [fixed]
            seconds = {seconds}
            [grid]
            i = {list(range(n))}
            """
        )
    )
    return path


def _driver(config, out):
    cmd = [sys.executable, "-m", "sigprop", "sweep", str(config), "--out", str(out),
           "--workers", "0", "--allow-import", "--no-progress"]  # fmt: skip
    return subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_rows(path, n, procs, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        if all(p.poll() is not None for p in procs):
            return
        time.sleep(0.02)


def _check_once(config, out):
    """Every point of the sweep has exactly one row, and no claim is left behind."""
    sweep = Sweep.from_toml(config, allow_import=True)
    rows = load_results(out)
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)), "a point ran twice"
    assert set(keys) == {run_key(sweep.run, p) for p in sweep.points()}, "a point is missing"
    assert all(r["status"] == "ok" for r in rows)
    assert not claims_dir(out).exists()
    return rows


# ------------------------------------------------------------------ two writers


def test_two_writer_processes_run_each_point_once(tmp_path):
    config = _nap_config(tmp_path, 0.3, 20)
    out = tmp_path / "r.jsonl"
    first = _driver(config, out)
    _wait_rows(out, 1, [first])
    second = _driver(config, out)  # starts while the first is mid-sweep
    for p in (first, second):
        stdout, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, stderr
    rows = _check_once(config, out)
    by_pid = {r["result"]["pid"] for r in rows}
    assert by_pid == {first.pid, second.pid}, "the two sweeps did not run side by side"


def test_a_killed_writer_is_resumed_without_loss_or_duplicate(tmp_path):
    config = _nap_config(tmp_path, 0.5, 6)
    out = tmp_path / "r.jsonl"
    proc = _driver(config, out)
    _wait_rows(out, 2, [proc])
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    before = load_results(out)
    assert 2 <= len(before) < 6
    stale = list(claims_dir(out).iterdir())
    assert len(stale) == 1  # the dead driver's claim, its point half-run
    sweep = Sweep.from_toml(config, allow_import=True)
    report = run_sweep(sweep, out, workers=0, allow_import=True, progress=False)
    assert (report.skipped, report.ran, report.elsewhere) == (len(before), 6 - len(before), 0)
    rows = _check_once(config, out)
    assert rows[: len(before)] == before


def test_a_writer_killed_while_another_runs(tmp_path):
    config = _nap_config(tmp_path, 0.3, 16)
    out = tmp_path / "r.jsonl"
    first = _driver(config, out)
    _wait_rows(out, 1, [first])
    second = _driver(config, out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and second.poll() is None:
        pids = {r["result"]["pid"] for r in load_results(out)}
        if second.pid in pids:
            break
        time.sleep(0.02)
    first.send_signal(signal.SIGKILL)  # its claimed point is now free for the survivor
    first.communicate(timeout=30)
    stdout, stderr = second.communicate(timeout=180)
    assert second.returncode == 0, stderr
    assert "pending" not in stderr
    _check_once(config, out)


# ------------------------------------------------------------------ non-finite grids


def test_nan_and_inf_grids_are_four_runs_and_resume(tmp_path):
    sweep = Sweep(run="mean_field", grid={"sigma_b": [math.nan, math.inf, -math.inf, 0.1]},
                  fixed={"sigma_w": 1.0})  # fmt: skip
    assert sweep.size() == 4
    keys = {run_key(sweep.run, p) for p in sweep.points()}
    assert len(keys) == 4
    out = tmp_path / "r.jsonl"
    first = run_sweep(sweep, out, workers=0, max_runs=2, progress=False)
    second = run_sweep(sweep, out, workers=0, progress=False)
    third = run_sweep(sweep, out, workers=0, progress=False)
    assert (first.ran, second.skipped, second.ran, third.skipped, third.ran) == (2, 2, 2, 4, 0)
    rows = load_results(out)
    assert {r["key"] for r in rows} == keys and len(rows) == 4
    values = sorted(repr(r["params"]["sigma_b"]) for r in rows)
    assert values == sorted(["nan", "inf", "-inf", "0.1"])  # read back as the same floats
    for line in out.read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    # the three non-finite points fail inside mean_field; retrying runs them once more each
    retry = run_sweep(sweep, out, workers=0, retry_failed=True, progress=False)
    assert retry.ran == 3 and len(load_results(out)) == 7


def test_the_finite_keys_of_earlier_versions_hold():
    assert run_key("mean_field", {"sigma_b": 0.1, "sigma_w": 1.0}) == "f403c195b52c2f5e"
    for table in ({"$float": "nan"}, {"$float": "x", "y": 1}):  # would be ambiguous
        with pytest.raises(InvalidInput, match="reserved"):
            run_key("mean_field", {"sigma_w": table})


_JSONABLE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text("ab", max_size=3), inner, max_size=3)
    ),
    max_leaves=15,
)


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)  # -0.0 is its own run
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@given(_JSONABLE, _JSONABLE)
def test_parameters_round_trip_through_strict_json(a, b):
    text = json.dumps(encode_value(a), allow_nan=False)
    assert _same(decode_value(json.loads(text)), a)
    # two values share a key exactly when they read back the same
    assert (canonical({"v": a}) == canonical({"v": b})) == _same(a, b)


# ------------------------------------------------------------------ the results file's tail


def test_a_complete_row_missing_its_newline_is_kept(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_bytes(b'{"key": "a", "status": "ok"}')
    append_row(out, {"key": "b", "status": "ok"})
    assert [r["key"] for r in load_results(out)] == ["a", "b"]


def test_a_foreign_last_line_is_never_cut(tmp_path):
    out = tmp_path / "report.json"
    out.write_bytes(b'{"key": "a", "status": "ok"}\n{"accuracy": 0.9}')
    with pytest.raises(InvalidInput, match="not a results file"):
        append_row(out, {"key": "b", "status": "ok"})
    assert out.read_bytes() == b'{"key": "a", "status": "ok"}\n{"accuracy": 0.9}'


def test_rows_are_written_key_first_and_must_have_a_key(tmp_path):
    out = tmp_path / "r.jsonl"
    append_row(out, {"status": "ok", "key": "a"})
    assert out.read_text().startswith('{"key": "a"')
    with pytest.raises(InvalidType):
        append_row(out, {"status": "ok"})


# ------------------------------------------------------------------ runs


def test_module_path_runs_need_the_opt_in(tmp_path):
    sweep = Sweep(run="tests.experiments.sweep_runs:nap", grid={"i": [0]}, fixed={"seconds": 0})
    with pytest.raises(InvalidInput, match="--allow-import"):
        run_sweep(sweep, tmp_path / "r.jsonl", workers=0, progress=False)
    with pytest.raises(InvalidInput, match="--allow-import"):
        get_run("os:system")
    assert not (tmp_path / "r.jsonl").exists()
    report = run_sweep(sweep, tmp_path / "r.jsonl", workers=0, allow_import=True, progress=False)
    assert report.ok == 1


def test_train_pruned_config_checks_every_field():
    config = TrainPrunedConfig.from_dict({"width": 32, "density": 1, "lr": 1})
    assert (config.width, config.density, config.lr) == (32, 1.0, 1.0)
    assert isinstance(config.density, float) and config.to_dict()["epochs"] == 10
    for bad, kind in [
        ({"width": "32"}, InvalidType),
        ({"width": 0}, InvalidInput),
        ({"epochs": 1.5}, InvalidType),
        ({"density": 1.5}, InvalidInput),
        ({"density": True}, InvalidType),
        ({"lr": math.nan}, InvalidInput),
        ({"rescale": 1}, InvalidType),
        ({"schedule": 3}, InvalidType),
        ({"sigma_w": -1.0}, InvalidInput),
        ({"dsr_prune_fraction": 2.0}, InvalidInput),
        ({"seed": -1}, InvalidInput),
        ({"widht": 32}, InvalidInput),
    ]:
        with pytest.raises(kind):
            TrainPrunedConfig.from_dict(bad)
        with pytest.raises(kind):  # train_pruned(**kwargs) checks before any work
            train_pruned(**bad)
    # the signature a sweep checks parameter names against is the config's fields
    assert list(inspect.signature(train_pruned).parameters) == list(TrainPrunedConfig().to_dict())


def test_plotting_takes_rows_not_paths(tmp_path):
    from sigprop.plotting.training import plot_accuracy_vs_density

    with pytest.raises(InvalidType, match="rows"):
        plot_accuracy_vs_density(tmp_path / "r.jsonl", tmp_path / "a.png")
