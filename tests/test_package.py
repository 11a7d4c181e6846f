"""Package-level contracts: theory stays torch-free (and sympy-free until needed), both entry
points run, imports run only downwards through the layers."""

import subprocess
import sys
from pathlib import Path

import sigprop


def _run(code: str) -> None:
    # a fresh interpreter: this process has long since imported torch through other tests
    subprocess.run([sys.executable, "-c", code], check=True)


def test_theory_does_not_import_torch():
    # every submodule, the lazily loaded ones (spectra, sparse, symbolic) included
    _run(
        "import sys, sigprop.theory as T\n"
        "mods = [T.spectra, T.sparse, T.symbolic]\n"
        "import sigprop.theory.activations, sigprop.theory.gaussian, sigprop.theory.meanfield\n"
        "assert [m.__name__.rsplit('.', 1)[1] for m in mods] == ['spectra', 'sparse', 'symbolic']\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )


def test_theory_imports_sympy_only_when_a_sympy_form_is_needed():
    _run(
        "import sys, sigprop.theory as T\n"
        "T.eoc_init('tanh', 0.1); T.get_activation('leaky_relu:0.2')\n"
        "assert 'sympy' not in sys.modules, 'sympy imported by the numeric path'\n"
        "assert str(T.get_activation('tanh').sympy_expr) == 'tanh(x)'\n"
        "assert 'sympy' in sys.modules"
    )


def test_sigprop_eoc_does_not_import_torch():
    _run(
        "import sys, contextlib, io\n"
        "from sigprop.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['eoc', 'tanh', '--sigma-b', '0.1', '--json']) == 0\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )


def test_python_dash_m_help():
    out = subprocess.run(
        [sys.executable, "-m", "sigprop", "--help"], capture_output=True, text=True, check=True
    )
    assert "eoc" in out.stdout


#: the layers of the package, lowest first (docs/architecture.md): a module may import
#: from its own layer and the ones below, never from above, at module level or in a function
LAYERS = {
    "_json": 0,
    "validate": 0,
    "theory": 1,
    "nn": 2,
    "io": 3,
    "prune": 3,
    "diagnostics": 4,
    "watcher": 5,
    "plotting": 6,
    "experiments": 7,
    "integrations": 8,
    "cli": 9,
    "__main__": 9,
}


def _sigprop_imports(path: Path):
    import ast

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "sigprop":
                yield from ((node.lineno, f"sigprop.{a.name}") for a in node.names)
            elif node.module.startswith("sigprop."):
                yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.startswith("sigprop."))


def test_imports_run_downwards():
    root = Path(sigprop.__file__).parent
    upward = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts == ("__init__.py",):
            continue  # the package's lazy front door re-exports every layer
        own = LAYERS[rel.parts[0].removesuffix(".py")]
        for line, module in _sigprop_imports(path):
            target = module.split(".")[1]
            if LAYERS.get(target, -1) > own:
                upward.append(f"{rel}:{line} imports {module}")
    assert not upward, "imports that run upwards:\n" + "\n".join(upward)


def test_no_module_is_over_500_lines():
    # one idea per module (docs/architecture.md): a module past 500 lines is split along the
    # concepts it holds
    root = Path(sigprop.__file__).parent
    long = {
        str(p.relative_to(root)): n
        for p in sorted(root.rglob("*.py"))
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    }
    assert not long, f"modules over 500 lines: {long}"
