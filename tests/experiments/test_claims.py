"""Claims as data (``sigprop.experiments.claims``): wrong predictions that must disagree, the
finite-size tolerance against its derivation, the claim record and the renderer. (The quick
demo's verdicts are asserted in tests/test_demo.py, on the one quick run of the suite.)"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np
import pytest

from sigprop.experiments.claims import (
    Bench,
    Claim,
    claims_markdown,
    eoc_section,
    finite_size_tolerance,
    log_ratio_err,
    phase_points,
    section_verdict,
    write_report,
)
from sigprop.experiments.demo import QUICK
from sigprop.plotting.files import write_atomic
from sigprop.validate import InvalidInput, InvalidType

# ------------------------------------------------------------------------------------------
# Wrong predictions must disagree (the EOC section alone, about 1 s each)
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench():
    return Bench.load(QUICK, 0)


def _by_id(section) -> dict:
    return {c.id: c for c in section.claims}


def test_a_wrong_eoc_sigma_w_disagrees(bench):
    """Claiming the EOC at σ_w² halved (χ₁ ≈ 0.73 there): the network built at that σ_w has
    measured χ^l far below 1, so the χ₁ claim must fail."""
    true = phase_points(QUICK).eoc
    wrong = dataclasses.replace(true, sigma_w=true.sigma_w * math.sqrt(0.5))
    section = eoc_section(bench, phase_points(QUICK, eoc=wrong))
    chi1 = _by_id(section)["eoc/chi1"]
    assert chi1.verdict == "disagree"
    assert chi1.measurement < 1 - chi1.tolerance
    assert section.verdict.startswith("disagree") and "eoc/chi1" in section.verdict


def test_a_doubled_q_star_disagrees_and_only_it(bench):
    true = phase_points(QUICK).eoc
    wrong = dataclasses.replace(true, q_star=2 * true.q_star)
    claims = _by_id(eoc_section(bench, phase_points(QUICK, eoc=wrong)))
    assert claims["eoc/q_star"].verdict == "disagree"
    assert claims["eoc/q_star"].error == pytest.approx(0.5, abs=claims["eoc/q_star"].tolerance)
    assert claims["eoc/chi1"].verdict == "agree"  # same network: χ₁ is still 1


# ------------------------------------------------------------------------------------------
# The finite-size tolerance: formula and derivation
# ------------------------------------------------------------------------------------------


def test_tolerance_formula():
    assert finite_size_tolerance(128) == math.sqrt(2 / 128)
    assert finite_size_tolerance(128, density=0.25) == pytest.approx(math.sqrt(2 / 32))
    got = finite_size_tolerance(
        100, density=0.5, n_sigma=2, scale=0.5, compounded=9, averaged=4, decades=True
    )
    assert got == pytest.approx(2 * 0.5 * math.sqrt(2 / 50) * 3 / 2 / math.log(10))
    # each factor enters as stated
    base = finite_size_tolerance(64)
    assert finite_size_tolerance(64, compounded=16) == pytest.approx(4 * base)
    assert finite_size_tolerance(64, averaged=16) == pytest.approx(base / 4)
    assert finite_size_tolerance(64, decades=True) == pytest.approx(base / math.log(10))


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"width": 0}, InvalidInput),
        ({"width": True}, InvalidType),
        ({"width": 8, "density": 1.5}, InvalidInput),
        ({"width": 8, "density": 0.0}, InvalidInput),
        ({"width": 8, "n_sigma": -1.0}, InvalidInput),
        ({"width": 8, "compounded": 0}, InvalidInput),
        ({"width": 8, "averaged": float("nan")}, InvalidInput),
    ],
)
def test_tolerance_rejects_bad_arguments(kw, error):
    with pytest.raises(error):
        finite_size_tolerance(**kw)


REPS = 4000
#: relative standard error of a standard deviation estimated from REPS draws, 1/√(2·REPS);
#: the checks below accept 4 of them
STD_REL = 4 / math.sqrt(2 * REPS)


@pytest.mark.parametrize("k", [16, 128])
def test_noise_of_a_mean_of_k_squares_is_s(k):
    """s = √(2/K) is the relative standard deviation of a mean of K squared standard normals
    (the derivation behind every tolerance)."""
    z = np.random.default_rng(k).standard_normal((REPS, k))
    q = (z**2).mean(axis=1)
    assert np.std(q) / np.mean(q) == pytest.approx(finite_size_tolerance(k), rel=STD_REL)


def test_noise_of_a_correlation_is_within_s_over_root_2():
    k, c = 128, 0.5
    rng = np.random.default_rng(1)
    u = rng.standard_normal((REPS, k))
    v = c * u + math.sqrt(1 - c**2) * rng.standard_normal((REPS, k))
    est = (u * v).mean(axis=1) / np.sqrt((u**2).mean(axis=1) * (v**2).mean(axis=1))
    assert np.std(est) == pytest.approx((1 - c**2) / math.sqrt(k), rel=STD_REL + 0.05)
    assert np.std(est) <= finite_size_tolerance(k, scale=1 / math.sqrt(2)) * (1 + STD_REL)


def test_noise_of_a_product_over_layers_in_decades():
    """log10 of a product of L independent per-layer factors, each a mean of K squares, has
    standard deviation s√L/ln 10 (to first order in s)."""
    k, layers = 128, 20
    rng = np.random.default_rng(2)
    factors = (rng.standard_normal((REPS, layers, k)) ** 2).mean(axis=2)
    spread = np.std(np.log10(factors).sum(axis=1))
    expected = finite_size_tolerance(k, compounded=layers, decades=True)
    assert spread == pytest.approx(expected, rel=STD_REL + 2 / k)  # + second order in s


# ------------------------------------------------------------------------------------------
# log_ratio_err, Claim, renderer, atomic writes
# ------------------------------------------------------------------------------------------


def test_log_ratio_err():
    m, p = [10.0, 1.0, 0.01, 0.0], [1.0, 1.0, 1.0, 1.0]
    assert log_ratio_err(m, p) == pytest.approx(2.0)  # the zero is not comparable
    assert log_ratio_err(m, p, reduce="median") == pytest.approx(1.0)
    assert log_ratio_err(3.0, 3.0) == 0.0
    assert math.isnan(log_ratio_err([0.0, -1.0], [1.0, 1.0]))
    with pytest.raises(InvalidInput):
        log_ratio_err([1.0], [1.0, 2.0])
    with pytest.raises(InvalidInput):
        log_ratio_err([1.0], [1.0], reduce="mean")


def _claim(**kw) -> Claim:
    fields = {
        "id": "test/x",
        "statement": "x equals 1",
        "paper": "1606.05340",
        "equation": "eq. (3)",
        "prediction": 1.0,
        "measurement": 1.05,
        "error": 0.05,
        "tolerance": 0.1,
        "metric": "absolute error",
        "derivation": "two standard errors",
    }
    fields.update(kw)
    return Claim.judge(**fields)


def test_claim_verdict_follows_its_numbers():
    assert _claim().verdict == "agree"
    assert _claim(error=0.2).verdict == "disagree"
    assert _claim(error=float("nan")).verdict == "disagree"
    assert _claim(error=0.1).verdict == "agree"  # the tolerance itself agrees
    fields = dataclasses.asdict(_claim(error=0.2))
    with pytest.raises(InvalidInput, match="contradicts"):
        Claim(**{**fields, "verdict": "agree"})
    with pytest.raises(InvalidInput, match="arXiv id"):
        _claim(paper="REFERENCES §4")
    with pytest.raises(InvalidInput):
        _claim(tolerance=-1.0)
    with pytest.raises(InvalidType):
        _claim(error="small")


def test_claim_round_trips_through_json():
    for c in (_claim(), _claim(error=float("nan"), figure="f.png")):
        back = Claim.from_dict(json.loads(json.dumps(c.to_dict(), allow_nan=False)))
        assert back.id == c.id and back.verdict == c.verdict and back.figure == c.figure
        assert back.error == c.error or (math.isnan(back.error) and math.isnan(c.error))


def test_renderer_writes_claims(tmp_path):
    claims = [_claim(), _claim(id="test/y", error=0.3)]
    md = claims_markdown(claims)
    assert "`test/x`" in md and "**disagree**" in md and "arXiv 1606.05340, eq. (3)" in md
    assert md.count("two standard errors") == 1  # one line per distinct tolerance origin
    assert section_verdict(claims) == "disagree (1/2 claims agree; disagree: test/y)"
    report, results = write_report(tmp_path, md, {"claims": [c.to_dict() for c in claims]})
    assert report.read_text(encoding="utf-8") == md
    data = json.loads(results.read_text(encoding="utf-8"))
    assert [Claim.from_dict(d) for d in data["claims"]] == claims


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    write_atomic(path, "néw")
    assert path.read_text(encoding="utf-8") == "néw"
    write_atomic(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    with pytest.raises(InvalidType):
        write_atomic(path, 3)
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "missing" / "b.txt", "x")
