"""``sigprop check FILE.safetensors`` (or a ``torch.save`` state dict) without
``--arch``/``--probe``/``--trust-pickle`` never imports torch (the blocks are numpy arrays,
bfloat16 and 8-bit floats decoded from their bits), and says what it says in a process where
torch is imported."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sigprop.cli import main

ROOT = Path(__file__).resolve().parents[2]

#: run ``python -m sigprop ARGS`` (runpy, as ``-m`` does) with an import hook that records
#: every import of torch, then report what it saw on the last line of stderr
_HOOKED = """
import builtins, runpy, sys
seen = []
real = builtins.__import__
def hook(name, *args, **kwargs):
    if name == "torch" or name.startswith("torch."):
        seen.append(name)
    return real(name, *args, **kwargs)
builtins.__import__ = hook
sys.argv = ["sigprop", *sys.argv[1:]]
try:
    runpy.run_module("sigprop", run_name="__main__", alter_sys=True)
finally:
    print("TORCH", sorted(set(seen)), "torch" in sys.modules, file=sys.stderr)
"""


def _mlp(dtype: torch.dtype, collapsed: bool) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {
        "fc1.weight": torch.randn(16, 8, generator=g),
        "fc1.bias": torch.randn(16, generator=g),
        "fc2.weight": torch.randn(12, 16, generator=g),
        "fc3.weight": torch.randn(4, 12, generator=g),
    }
    if collapsed:  # a weight_mask layout whose middle layer keeps nothing
        sd["fc1.weight_mask"] = (torch.rand(16, 8, generator=g) < 0.5).float()
        sd["fc2.weight_mask"] = torch.zeros(12, 16)
        sd["fc3.weight_mask"] = torch.ones(4, 12)
    return {k: v.to(dtype).contiguous() for k, v in sd.items()}


CASES = {
    "dense": (torch.float32, False),
    "pruned": (torch.float32, True),
    "bf16": (torch.bfloat16, True),
    "f16": (torch.float16, False),
    "f8": (torch.float8_e4m3fn, True),
}


def _in_process(path: Path) -> tuple[int, dict]:
    assert "torch" in sys.modules
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["check", str(path), "--json"])
    return code, json.loads(out.getvalue())


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_check_of_a_state_dict_file_never_imports_torch(tmp_path, case, fmt):
    # safetensors, and a torch.save state dict (read by sigprop's own restricted unpickler)
    dtype, collapsed = CASES[case]
    path = tmp_path / f"{case}.{fmt}"
    if fmt == "pt":
        torch.save(_mlp(dtype, collapsed), path)
    else:
        save_file(_mlp(dtype, collapsed), str(path))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-c", _HOOKED, "check", str(path), "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert run.stderr.strip().splitlines()[-1] == "TORCH [] False", run.stderr
    code, reference = _in_process(path)
    assert run.returncode == code
    assert json.loads(run.stdout) == reference
    if collapsed:
        assert code == 1 and reference["collapsed_layers"] == ["fc2"]
    else:
        assert code == 0 and reference["verdict"] == "healthy"
