"""Run the notebooks in ``notebooks/`` headless, at a chosen budget, writing into ``figures/``.

Every notebook reads two environment variables, set here:

``SIGPROP_BUDGET``
    ``"small"`` (seconds; used by the test suite) or ``"full"`` (the numbers quoted in the
    notebook's conclusions; run by hand or with ``sigprop figures``);
``SIGPROP_FIGURES``
    the folder its figures are saved to (``figures/`` at the repository root by default).

Notebooks are executed with :mod:`nbclient` in a fresh kernel whose working directory is the
notebook's folder; outputs are never written back into the committed ``.ipynb`` files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from sigprop._json import to_jsonable
from sigprop.validate import InvalidInput

BUDGETS = ("small", "full")


@dataclass(frozen=True)
class NotebookRun:
    """Outcome of one headless notebook execution.

    Attributes:
        notebook: path of the notebook that ran.
        budget: ``"small"`` or ``"full"``.
        seconds: wall-clock time of the execution.
        figures: figure files present in the figures folder after the run, written by it.
    """

    notebook: str
    budget: str
    seconds: float
    figures: tuple[str, ...]

    def to_dict(self) -> dict:
        return to_jsonable(self, "NotebookRun")


def repository_root() -> Path:
    """The checkout this package was installed from (editable installs), else the cwd."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "notebooks").is_dir() else Path.cwd()


def find_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """The committed notebooks, in their numbered order."""
    folder = Path(folder) if folder is not None else repository_root() / "notebooks"
    if not folder.is_dir():
        raise InvalidInput(f"no notebooks folder at {folder}")
    return sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))


def run_notebook(
    path: str | os.PathLike,
    *,
    budget: str = "small",
    figures_dir: str | os.PathLike | None = None,
    timeout: int = 1800,
) -> NotebookRun:
    """Execute one notebook headless; raise ``RuntimeError`` naming the failing cell."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    if budget not in BUDGETS:
        raise InvalidInput(f"budget must be one of {BUDGETS}, got {budget!r}")
    path = Path(path).resolve()
    if not path.is_file():
        raise InvalidInput(f"no notebook at {path}")
    figures = Path(figures_dir) if figures_dir is not None else repository_root() / "figures"
    figures = figures.resolve()
    figures.mkdir(parents=True, exist_ok=True)
    before = {p: p.stat().st_mtime for p in figures.iterdir()}

    nb = nbformat.read(path, as_version=4)
    env_keys = {"SIGPROP_BUDGET": budget, "SIGPROP_FIGURES": str(figures), "MPLBACKEND": "Agg"}
    saved = {k: os.environ.get(k) for k in env_keys}
    os.environ.update(env_keys)  # the kernel inherits the environment of this process
    start = time.perf_counter()
    try:
        client = NotebookClient(
            nb,
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()
    except CellExecutionError as exc:
        raise RuntimeError(f"{path.name} failed: {exc}") from exc
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    seconds = time.perf_counter() - start
    written = tuple(
        sorted(
            str(p)
            for p in figures.iterdir()
            if p.is_file() and (p not in before or p.stat().st_mtime > before[p])
        )
    )
    return NotebookRun(str(path), budget, seconds, written)
