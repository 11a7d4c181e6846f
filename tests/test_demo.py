"""``sigprop demo``: the main job end to end through the installed entry point, its
determinism, and its bad-input handling."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import torch

from sigprop.cli import main
from sigprop.experiments.claims import Claim
from sigprop.experiments.demo import QUICK, DemoConfig, _derive_seed, run_demo

SECTIONS = ("eoc", "signal", "collapse", "spectra", "training")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

#: A miniature of the demo for the determinism check (seconds, not a meaningful experiment).
TINY = DemoConfig(
    width=32,
    depth=6,
    density=0.25,
    n_probe=32,
    n_pairs=16,
    collapse_densities=(0.2,),
    methods=("random", "magnitude", "snip"),
    n_jacobian=2,
    epochs=1,
)


def _numbers(obj, path="results"):
    """Every numeric leaf of a JSON tree, with its path."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    """``sigprop demo --quick`` through the entry point, run once for the tests of this module
    that read its outputs (the files, and the verdicts of its claims)."""
    out = tmp_path_factory.mktemp("quick") / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "sigprop", "demo", "--quick", "--out", str(out), "--no-progress"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return out, proc


@pytest.mark.slow
def test_quick_demo_through_the_entry_point(quick_run):
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "report:" in proc.stdout
    report = (out / "report.md").read_text(encoding="utf-8")
    for title in ("a. Edge of chaos", "b. Signal", "c. Layer collapse", "d. Jacobian", "e. Train"):
        assert f"## {title}" in report, title
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["config"]["width"] == QUICK.width
    assert set(results["verdicts"]) == set(SECTIONS)
    assert set(results["sections"]) == set(SECTIONS)
    numbers = list(_numbers(results["sections"]))
    assert len(numbers) > 500
    bad = [(p, v) for p, v in numbers if not math.isfinite(v)]
    assert not bad, bad[:5]
    # The headline numbers are present (not replaced by null).
    eoc = results["sections"]["eoc"]
    assert math.isfinite(eoc["eoc"]["sigma_w"]) and math.isfinite(eoc["eoc"]["q_star"])
    for phase in ("ordered", "eoc", "chaotic"):
        for variant in ("dense", "pruned", "rescaled"):
            r = results["sections"]["signal"]["phases"][phase][variant]
            assert len(r["q_measured"]) == QUICK.depth
            assert all(v is not None for v in r["q_measured"] + r["q_predicted"])
    for r in results["sections"]["training"]["runs"].values():
        assert len(r["test_accuracy"]) == QUICK.epochs
        assert 0.0 <= r["trainability_score"] <= 1.0 and r["trainability_reason"]
    # every Markdown table keeps its columns (a '|' inside a cell, as in |b|, is escaped)
    for block in re.findall(r"(?:^\|.*\n?)+", report, flags=re.MULTILINE):
        widths = {len(re.split(r"(?<!\\)\|", line.strip())) for line in block.splitlines()}
        assert len(widths) == 1, block[:300]
    # SynFlow runs in the theorem's bias-free setting and, alongside, as the official code does
    collapse = results["sections"]["collapse"]
    if "synflow" in QUICK.methods:
        methods = {r["method"] for r in collapse["runs"].values()}
        assert {"synflow", "synflow, biases in R"} <= methods
    figures = sorted(out.glob("demo_*.png"))
    assert len(figures) == 4
    for fig in figures:
        data = fig.read_bytes()
        assert data[:8] == PNG_MAGIC and 10_000 < len(data) < 300_000, fig.name
        assert f"]({fig.name})" in report, f"{fig.name} not linked from the report"


def _expected_claims(cfg) -> set[str]:
    """The claims the demo makes for ``cfg``: two on the EOC point, four per (phase, network)
    of the signal section, magnitude's first collapse and kept counts, SNIP's first
    collapse, SynFlow's theorem, two moments per network of the spectra, one per trained
    network."""
    ids = {"eoc/q_star", "eoc/chi1"}
    for phase, _ in cfg.phase_factors:
        for variant in ("dense", "pruned", "rescaled"):
            ids |= {f"signal/{phase}/{variant}/{k}" for k in ("q", "c", "delta", "weight_grad")}
            ids |= {f"spectra/{variant}/m1", f"spectra/{variant}/m2"}
    ids |= {
        "collapse/magnitude/first_collapse",
        "collapse/magnitude/kept_count",
        "collapse/snip/first_collapse",
        "collapse/synflow/no_collapse",
    }
    ids |= {f"training/{n}" for n in ("dense", "pruned", "rescaled", "dct")}
    return ids


@pytest.mark.slow
def test_quick_demo_every_claim_agrees(quick_run):
    """Today's verdicts of the quick run (seed 0): every claim agrees with its measurement,
    and each section's verdict line says so."""
    out, proc = quick_run
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    claims = [Claim.from_dict(d) for d in results["claims"]]
    assert sorted(c.id for c in claims) == sorted(_expected_claims(QUICK))
    disagree = [(c.id, c.measurement, c.error, c.tolerance) for c in claims if not c.agrees]
    assert not disagree, disagree
    for key in SECTIONS:
        n = sum(c.id.startswith(f"{key}/") for c in claims)
        assert results["verdicts"][key] == f"agree ({n}/{n} claims)"
        assert results["sections"][key]["agree"] is True
    report = (out / "report.md").read_text(encoding="utf-8")
    assert f"{len(claims)} of {len(claims)} claims agree" in report
    for c in claims:
        assert f"`{c.id}`" in report, c.id
        assert c.figure is None or (out / c.figure).is_file(), c.figure
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_quick_demo_tolerances_follow_the_formula(quick_run):
    """The tolerances the sections used are finite_size_tolerance's, s = √(2/ρN)."""
    out, _ = quick_run
    sections = json.loads((out / "results.json").read_text(encoding="utf-8"))["sections"]
    n, depth, rho = QUICK.width, QUICK.depth, QUICK.density
    sig = sections["signal"]["tolerance"]
    assert sig["sparse"]["finite_size_noise_s"] == pytest.approx(math.sqrt(2 / (rho * n)))
    assert sig["dense"]["c_median_abs"] == pytest.approx(math.sqrt(2 / n) / math.sqrt(2))
    grad = 2 * math.sqrt(2 / (rho * n)) * math.sqrt(depth + 1) / math.log(10)
    assert sig["sparse"]["grad_decades"] == pytest.approx(grad)
    m1 = 2 * math.sqrt(2 / n) * math.sqrt(depth - 2) / math.log(10)
    assert sections["spectra"]["tolerance"]["dense_m1_decades"] == pytest.approx(m1)
    n_avg = (depth - 1) - depth // 2
    eoc = sections["eoc"]["tolerance"]["q_rel"]
    assert eoc == pytest.approx(2 * math.sqrt(2 / n) / math.sqrt(n_avg / 2))


@pytest.mark.slow
def test_same_seed_same_numbers(tmp_path):
    """Bit-identical numbers for the same seed on the CPU; a different seed changes them."""
    a = run_demo(tmp_path / "a", seed=3, progress=False, config=TINY)
    b = run_demo(tmp_path / "b", seed=3, progress=False, config=TINY)
    c = run_demo(tmp_path / "c", seed=4, progress=False, config=TINY)
    assert a.sections == b.sections
    assert a.verdicts == b.verdicts
    assert a.sections["signal"] != c.sections["signal"]
    json_a = json.loads((tmp_path / "a" / "results.json").read_text())
    json_b = json.loads((tmp_path / "b" / "results.json").read_text())
    assert json_a["sections"] == json_b["sections"]


def test_derived_seeds_are_stable_and_distinct():
    # A fixed value: derived seeds must not depend on Python's per-process hash salt.
    assert _derive_seed(0, "eoc", "weights") == _derive_seed(0, "eoc", "weights")
    assert _derive_seed(0, "eoc") != _derive_seed(1, "eoc")
    assert _derive_seed(0, "eoc") != _derive_seed(0, "chaotic")
    assert 0 <= _derive_seed(123, "x") < 2**63
    code = "from sigprop.experiments.demo import _derive_seed; print(_derive_seed(7, 'a', 0.1))"
    runs = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
        for _ in range(2)
    }
    assert len(runs) == 1 and runs.pop().strip() == str(_derive_seed(7, "a", 0.1))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--device", "tpu"], "device must be 'cpu' or 'cuda'"),
        (["--seed", "-1"], "seed must be a non-negative integer"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, message, tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without CUDA")
def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sigprop", "demo", "--out", str(tmp_path), "--device", "cuda"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "cuda" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_config_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="density must be in"):
        run_demo(tmp_path, config=DemoConfig(density=0.0))
    with pytest.raises(ValueError, match="must contain 'eoc'"):
        run_demo(tmp_path, config=DemoConfig(phase_factors=(("ordered", 0.5),)))
