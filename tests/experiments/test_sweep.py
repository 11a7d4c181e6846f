"""Sweeps: grids, atomic resumable results, failures as rows, local processes and Dask."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sigprop.experiments import runs
from sigprop.experiments.sweep import (
    Sweep,
    append_row,
    format_table,
    latest_rows,
    load_results,
    run_key,
    run_sweep,
    summary_table,
    sweep_rows,
)

# mean_field is theory only (milliseconds, no torch): the grid machinery is what is tested.
# 'nope' is not an activation and ReLU with sigma_w^2 > 2 has no fixed point: both fail.
MF = Sweep(
    run="mean_field",
    grid={"activation": ["tanh", "relu", "nope"], "sigma_w": [0.8, 1.2, 1.5]},
    fixed={"sigma_b": 0.1},
)
MF_FAILING = 4  # 3 x 'nope' + relu at sigma_w = 1.5
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _strip(row):
    return {k: v for k, v in row.items() if k not in ("wall_time", "worker", "finished")}


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    # dashboard_address=":0": a random port, so concurrent clusters never clash on 8787
    with distributed.LocalCluster(
        processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0"
    ) as lc:
        yield lc


@pytest.fixture(scope="module")
def client(cluster):
    import distributed

    with distributed.Client(cluster, set_as_default=False) as c:
        yield c


# ------------------------------------------------------------------------------ grids


def test_points_are_the_cartesian_product_in_grid_order():
    pts = MF.points()
    assert len(pts) == 9
    assert pts[0] == {"sigma_b": 0.1, "activation": "tanh", "sigma_w": 0.8}
    assert pts[1] == {"sigma_b": 0.1, "activation": "tanh", "sigma_w": 1.2}
    assert [p["activation"] for p in pts[::3]] == ["tanh", "relu", "nope"]
    dup = Sweep(run="mean_field", grid={"sigma_w": [1.0, 1.0, 2.0]})
    assert len(dup.points()) == 2


@given(
    grid=st.dictionaries(
        st.sampled_from(["a", "b", "c", "d"]),
        st.lists(st.integers(-3, 3) | st.sampled_from(["x", "y"]), min_size=1, max_size=4),
        min_size=1,
    )
)
def test_points_cover_the_distinct_product_once(grid):
    sweep = Sweep(run="mean_field", grid=grid)
    pts = sweep.points()
    distinct = [len({json.dumps(v) for v in values}) for values in grid.values()]
    assert len(pts) == int(np.prod(distinct))
    keys = [run_key(sweep.run, p) for p in pts]
    assert len(set(keys)) == len(keys)
    # the key ignores the order of the parameters
    assert keys == [run_key(sweep.run, dict(reversed(list(p.items())))) for p in pts]


def test_run_key_is_order_independent_and_stable():
    a = run_key("mean_field", {"sigma_w": 1.0, "sigma_b": 0.1})
    b = run_key("mean_field", {"sigma_b": 0.1, "sigma_w": 1.0})
    assert a == b and len(a) == 16
    assert run_key("mean_field", {"sigma_w": 1.0, "sigma_b": 0.2}) != a
    assert run_key("train_pruned", {"sigma_w": 1.0, "sigma_b": 0.1}) != a
    # pinned: changing the key function would silently redo every finished run on resume
    assert a == run_key("mean_field", {"sigma_b": 0.1, "sigma_w": 1.0})
    assert a == "f403c195b52c2f5e"
    # numpy numbers go through the shared JSON rule (sigprop._json): np.float64(1.0) is the
    # same number as 1.0 (same key); np.float32(0.1) is not the double 0.1 (another key)
    assert run_key("mean_field", {"sigma_w": np.float64(1.0), "sigma_b": np.float32(0.1)}) != a
    assert run_key("mean_field", {"sigma_w": np.float64(1.0), "sigma_b": 0.1}) == a


def test_sweep_to_dict_is_strict_json():
    sw = Sweep(
        run="mean_field", grid={"sigma_w": list(np.array([0.8, 1.2]))}, fixed={"sigma_b": 0.1}
    )
    d = sw.to_dict()
    assert d["grid"] == {"sigma_w": [0.8, 1.2]}
    json.dumps(d, allow_nan=False)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"run": ""}, "run must be"),
        ({"run": "mean_field", "grid": {"sigma_w": 1.0}}, "must be a list"),
        ({"run": "mean_field", "grid": {"sigma_w": []}}, "empty"),
        ({"run": "mean_field", "grid": {"sigma_w": [1]}, "fixed": {"sigma_w": 2}}, "both in grid"),
        ({"run": "mean_field", "grid": {"sigma_w": [object()]}}, "JSON"),
    ],
)
def test_bad_sweeps(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Sweep(**kwargs)


def test_toml_config(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(
        textwrap.dedent(
            """
            run = "mean_field"
            summary = ["chi1"]
            [fixed]
            sigma_b = 0.05
            [grid]
            sigma_w = [1.0, 1.3]
            """
        )
    )
    sweep = Sweep.from_toml(path)
    assert sweep.summary == ("chi1",) and sweep.points()[1] == {"sigma_b": 0.05, "sigma_w": 1.3}
    path.write_text('run = "mean_field"\ngird = {}\n')
    with pytest.raises(ValueError, match="unknown sweep config key"):
        Sweep.from_toml(path)
    path.write_text("run = \n")
    with pytest.raises(ValueError, match="not valid TOML"):
        Sweep.from_toml(path)


def test_example_config_is_valid():
    sweep = Sweep.from_toml(os.path.join(ROOT, "examples", "sweep.toml"))
    assert sweep.run in runs.RUNS and len(sweep.points()) > 1


def test_unknown_run_and_parameters_fail_before_running(tmp_path):
    out = tmp_path / "r.jsonl"
    with pytest.raises(ValueError, match="unknown run"):
        run_sweep(Sweep(run="no_such_run", grid={"a": [1]}), out, workers=0, progress=False)
    with pytest.raises(ValueError, match="does not take parameter"):
        run_sweep(Sweep(run="mean_field", grid={"sigmaw": [1]}), out, workers=0, progress=False)
    assert not out.exists()


# ------------------------------------------------------------------------------ results file


def test_torn_last_line_is_ignored_and_repaired(tmp_path):
    out = tmp_path / "r.jsonl"
    append_row(out, {"key": "a", "status": "ok"})
    with open(out, "ab") as fh:  # a writer killed in the middle of a line
        fh.write(b'{"key": "b", "sta')
    assert [r["key"] for r in load_results(out)] == ["a"]
    append_row(out, {"key": "c", "status": "ok"})
    assert [r["key"] for r in load_results(out)] == ["a", "c"]
    assert out.read_bytes().count(b"\n") == 2 and b'"b"' not in out.read_bytes()


def test_malformed_rows_and_nan_are_refused(tmp_path):
    out = tmp_path / "r.jsonl"
    out.write_text('{"key": "a", "status": "ok"}\nnot json\n')
    with pytest.raises(ValueError, match=":2:"):
        load_results(out)
    with pytest.raises(ValueError):
        append_row(tmp_path / "n.jsonl", {"key": "a", "status": "ok", "x": float("nan")})
    assert load_results(tmp_path / "missing.jsonl") == []


def test_concurrent_writers_never_interleave(tmp_path):
    out = tmp_path / "r.jsonl"
    code = textwrap.dedent(
        f"""
        import sys
        from sigprop.experiments.sweep import append_row
        w = sys.argv[1]
        for i in range(150):
            append_row({str(out)!r}, {{"key": w + str(i), "status": "ok", "pad": "x" * (i * 37 % 5000)}})
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, w]) for w in ("p", "q", "r")]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    rows = load_results(out)
    assert len(rows) == 450 and len({r["key"] for r in rows}) == 450


# ------------------------------------------------------------------------------ execution


def test_inline_sweep_records_failures_and_resumes(tmp_path):
    out = tmp_path / "r.jsonl"
    first = run_sweep(MF, out, workers=0, max_runs=4, progress=False)
    assert (first.ran, first.total, first.skipped) == (4, 9, 0)
    second = run_sweep(MF, out, workers=0, progress=False)
    assert (second.ran, second.skipped) == (5, 4)
    assert first.failed + second.failed == MF_FAILING
    rows = load_results(out)
    assert len(rows) == 9 and len({r["key"] for r in rows}) == 9
    errors = [r for r in rows if r["status"] == "error"]
    assert {r["error"]["type"] for r in errors} == {"ValueError"}
    assert any("nope" in r["error"]["message"] for r in errors)
    ok = [r for r in rows if r["status"] == "ok"]
    tanh = next(
        r for r in ok if r["params"] == {"sigma_b": 0.1, "activation": "tanh", "sigma_w": 1.2}
    )
    assert tanh["result"]["phase"] == "chaotic"  # sigma_w = 1.2 is past the EOC 1.1934
    # a third call has nothing to do; retry_failed reruns exactly the failures
    assert run_sweep(MF, out, workers=0, progress=False).ran == 0
    retry = run_sweep(MF, out, workers=0, retry_failed=True, progress=False)
    assert retry.ran == MF_FAILING and len(latest_rows(load_results(out))) == 9


def test_local_processes_match_inline(tmp_path):
    inline = run_sweep(MF, tmp_path / "a.jsonl", workers=0, progress=False)
    procs = run_sweep(MF, tmp_path / "b.jsonl", workers=2, progress=False)
    assert procs.executor == "processes:2" and (procs.ok, procs.failed) == (
        inline.ok,
        inline.failed,
    )
    a = {r["key"]: _strip(r) for r in load_results(tmp_path / "a.jsonl")}
    b = {r["key"]: _strip(r) for r in load_results(tmp_path / "b.jsonl")}
    for key in a:
        a[key]["error"] = b[key]["error"] = None  # tracebacks name different frames
    assert a == b
    # rows arrive in completion order; sweep_rows restores the grid order
    rows = sweep_rows(MF, load_results(tmp_path / "b.jsonl"))
    assert [r["params"] for r in rows] == MF.points()
    json.dumps(rows, allow_nan=False)


def test_dask_sweep_with_failures(tmp_path, client):
    out = tmp_path / "r.jsonl"
    report = run_sweep(MF, out, scheduler=client, progress=False)
    assert report.executor.startswith("dask:") and (report.ok, report.failed) == (5, MF_FAILING)
    workers = {r["worker"] for r in load_results(out)}
    assert len(workers) == 2  # both cluster workers took runs
    # by address, as the CLI does
    again = run_sweep(
        MF, out, scheduler=client.scheduler.address, retry_failed=True, progress=False
    )
    assert again.ran == MF_FAILING


def _wait_rows(path, n, proc, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        if path.exists() and path.read_bytes().count(b"\n") >= n:
            return
        time.sleep(0.05)


def test_dask_sweep_resumes_after_the_driver_is_killed(tmp_path, cluster):
    # runs that sleep 1 s (no torch to import on the workers: seconds, not tens of seconds,
    # under load), so the sweep of six runs on two workers is killed after two or three rows
    config = tmp_path / "s.toml"
    config.write_text(
        textwrap.dedent(
            """
            run = "tests.experiments.sweep_runs:nap"
            [fixed]
            seconds = 1.0
            [grid]
            i = [0, 1, 2, 3, 4, 5]
            """
        )
    )
    out = tmp_path / "r.jsonl"
    cmd = [sys.executable, "-m", "sigprop", "sweep", str(config), "--out", str(out),
           "--scheduler", cluster.scheduler_address, "--no-progress", "--allow-import"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _wait_rows(out, 2, proc)
    assert proc.poll() is None, "the sweep finished before it could be interrupted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done_before = load_results(out)
    assert 2 <= len(done_before) < 6
    resumed = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr
    rows = load_results(out)
    keys = [r["key"] for r in rows]
    sweep = Sweep.from_toml(config, allow_import=True)
    expected = {run_key(sweep.run, p) for p in sweep.points()}
    assert len(keys) == len(set(keys)) == 6  # no duplicated row
    assert set(keys) == expected  # no lost row
    assert rows[: len(done_before)] == done_before  # finished rows untouched
    assert all(r["status"] == "ok" for r in rows)
    assert f"{len(done_before)} already done" in resumed.stdout


# ------------------------------------------------------------------------------ summary


def test_summary_table_averages_seeds(tmp_path):
    rows = [
        {"key": "a", "status": "ok", "params": {"m": "x", "seed": 0}, "result": {"acc": 0.5}},
        {"key": "b", "status": "ok", "params": {"m": "x", "seed": 1}, "result": {"acc": 0.7}},
        {"key": "c", "status": "error", "params": {"m": "y", "seed": 0}, "result": None},
        {"key": "d", "status": "ok", "params": {"m": "y", "seed": 1}, "result": {"acc": 0.9}},
    ]
    table = summary_table(rows)
    assert table[0] == {
        "m": "x",
        "n": 2,
        "failed": 0,
        "acc": pytest.approx(0.6),
        "acc_std": pytest.approx(0.1414213562),
    }
    assert table[1] == {"m": "y", "n": 2, "failed": 1, "acc": 0.9}
    text = format_table(table)
    assert "0.6 ± 0.14" in text and text.splitlines()[0].split() == ["m", "n", "failed", "acc"]


# ------------------------------------------------------------------------------ named runs


def test_train_pruned_run():
    dense = runs.train_pruned(method="dense", density=1.0, width=64, depth=3, epochs=3, lr=0.05)
    assert dense["final_test_accuracy"] > 0.9  # ~96 % on digits; see test_train for the margin
    assert dense["density_actual"] == 1.0 and dense["collapsed_layers"] == 0
    pruned = runs.train_pruned(method="magnitude", density=0.1, width=64, depth=3, epochs=1)
    # exact kept count: round(0.1 * total weights) over the three weight layers
    total = 64 * 64 + 64 * 64 + 64 * 10
    assert pruned["kept_weights"] == round(0.1 * total)
    assert len(pruned["layer_density"]) == 3
    assert pruned["effective_density"] <= pruned["density_actual"]
    json.dumps(pruned, allow_nan=False)
    with pytest.raises(ValueError, match="unknown pruning method"):
        runs.train_pruned(method="lottery", epochs=1)


def test_signal_flow_run_tracks_the_masked_q_map():
    kw = {"method": "random", "density": 0.3, "depth": 6, "width": 256, "n_inputs": 32}
    plain = runs.signal_flow(rescale=False, **kw)
    rescaled = runs.signal_flow(rescale=True, **kw)
    assert len(plain["q_measured"]) == len(plain["q_predicted"]) == 6
    for out in (plain, rescaled):
        # hidden layers only (the 10-unit readout averages too few units): at width 256 the
        # measured q^l of one network deviates from the mean-field value by up to ~11 % at
        # depth 5 (seen over seeds); 20 % still fails a mask the prediction ignored, which
        # is off by a factor 0.3 per layer
        meas, pred = np.array(out["q_measured"][:-1]), np.array(out["q_predicted"][:-1])
        assert np.all(np.abs(meas / pred - 1) < 0.2)
    # the rescaling trick restores the dense variance map: ~100x more signal at layer 5
    assert rescaled["q_measured"][4] > 30 * plain["q_measured"][4]


def test_accuracy_vs_density_plot(tmp_path):
    from sigprop.experiments.sweep import plot_accuracy_vs_density

    rows = [
        {"key": f"k{m}{d}{s}", "status": "ok", "params": {"method": m, "density": d, "seed": s},
         "result": {"final_test_accuracy": 0.5 + d / 2 + 0.01 * s}}
        for m in ("snip", "random") for d in (0.01, 0.1) for s in (0, 1)
    ]  # fmt: skip
    out = tmp_path / "r.jsonl"
    for row in rows:
        append_row(out, row)
    path = plot_accuracy_vs_density(out, tmp_path / "acc.png", dense=0.97)
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="no ok rows"):
        plot_accuracy_vs_density(rows, tmp_path / "none.png", where={"depth": 3})
