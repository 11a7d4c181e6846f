"""`sigprop eoc` and `sigprop phase` through the real entry point and through main()."""

import json
import subprocess
import sys

import pytest

from sigprop.cli import main


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "sigprop", *args], capture_output=True, text=True, timeout=300
    )


def test_eoc_json_through_entry_point():
    out = run_cli("eoc", "tanh", "--sigma-b", "0.1", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    for key in ("activation", "sigma_w", "sigma_b", "q_star", "chi1"):
        assert key in data
    # REFERENCES §1: tanh, σ_b = 0.1 → σ_w² = 1.42421, q* = 0.27330
    assert data["sigma_w2"] == pytest.approx(1.42421, abs=5e-6)
    assert data["q_star"] == pytest.approx(0.27330, abs=5e-6)
    assert data["chi1"] == pytest.approx(1.0, abs=1e-12)


def test_eoc_text_and_expression(capsys):
    assert main(["eoc", "leaky_relu:0.2"]) == 0
    text = capsys.readouterr().out
    assert "sigma_w^2 = 1.92307692308" in text  # 2/(1+α²) to 12 digits
    assert main(["eoc", "erf", "--sigma-b", "0.3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["activation"] == "erf"
    assert main(["eoc", "tanh(x)", "--sigma-b", "0.1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sigma_w2"] == pytest.approx(1.4242052904885958, rel=1e-12)


@pytest.mark.parametrize(
    "args, words",
    [
        (["eoc", "relu", "--sigma-b", "0.1"], "no edge of chaos"),
        (["eoc", "nope"], "unknown activation"),
        (["eoc", "tanh", "--sigma-b", "-1"], "standard deviation"),
        (["eoc", "tanh", "--sigma-b", "nan"], "finite"),
    ],
)
def test_eoc_errors_exit_2_with_one_line(args, words, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err


def test_eoc_error_through_entry_point():
    out = run_cli("eoc", "relu", "--sigma-b", "0.5")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "no edge of chaos" in out.stderr


def test_phase_writes_png(tmp_path):
    path = tmp_path / "phase.png"
    out = run_cli("phase", "tanh", "--out", str(path), "--grid", "48")
    assert out.returncode == 0, out.stderr
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stdout.strip() == str(path)


def test_phase_via_main_and_errors(tmp_path, capsys):
    path = tmp_path / "relu.png"
    assert main(["phase", "relu", "--out", str(path), "--grid", "24"]) == 0
    assert path.stat().st_size > 10_000
    assert main(["phase", "tanh", "--out", str(tmp_path / "x.png"), "--grid", "3"]) == 2
    assert "grid must be" in capsys.readouterr().err
    assert main(["phase", "tanh", "--out", str(tmp_path / "no" / "x.png"), "--grid", "16"]) == 2
    assert "No such file" in capsys.readouterr().err


def test_closed_pipe_is_silent_through_entry_point():
    # `sigprop eoc ... --json | head -0`: the reader is gone before anything is written
    p = subprocess.Popen(
        [sys.executable, "-m", "sigprop", "eoc", "hard_tanh", "--sigma-b", "0.1", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    p.stdout.close()
    stderr = p.stderr.read()
    p.stderr.close()
    assert p.wait(timeout=300) == 141
    assert stderr == b""


def test_closed_pipe_in_process(monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    assert main(["eoc", "tanh", "--sigma-b", "0.1", "--json"]) == 141
    assert capsys.readouterr().err == ""


def test_unexpected_exception_is_an_internal_error(monkeypatch, capsys):
    import sigprop.theory

    def boom(*args, **kwargs):
        raise RuntimeError("solver exploded")

    monkeypatch.setattr(sigprop.theory, "eoc_init", boom)
    assert main(["eoc", "tanh"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("sigprop eoc: internal error (RuntimeError): solver exploded")
    assert len(err.strip().splitlines()) == 1


def test_eoc_expression_numbers_unchanged(capsys):
    # the same EOC point as when expressions went through sympy (float64 round-off)
    assert main(["eoc", "x/(1+abs(x))", "--sigma-b", "0.3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sigma_w"] == pytest.approx(1.897491772996471, rel=1e-12)
    assert data["q_star"] == pytest.approx(0.5996412517892862, rel=1e-12)
    assert main(["eoc", "max(x,0)+min(exp(x)-1,0)", "--sigma-b", "0.3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["sigma_w"] == pytest.approx(1.263107845124147, rel=1e-12)


@pytest.mark.parametrize(
    "expr, words",
    [("x.__class__", "attribute access"), ("gamma(x)", "not allowed"), ("2x", "write products")],
)
def test_expression_errors_exit_2_with_one_line(expr, words, capsys):
    assert main(["eoc", expr, "--sigma-b", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "Traceback" not in err


def test_phase_rejects_a_divergent_expression_before_plotting(tmp_path, capsys):
    out = tmp_path / "e.png"
    assert main(["phase", "exp(x**2)", "--out", str(out), "--grid", "8"]) == 2
    assert "exp(c|x|^2)" in capsys.readouterr().err and not out.exists()
