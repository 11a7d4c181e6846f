"""What every benchmark reports about the machine's load (imported by the bench_* scripts,
which run as ``python benchmarks/bench_<topic>.py`` with this folder on ``sys.path``)."""

from __future__ import annotations

import os

#: 1-min load average when the benchmark process imported this module.
START_LOAD = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def load_note(own_threads: int = 1) -> str:
    """The load averages at the start and end of the run, and what they say about sharing.

    The benchmark's own runnable threads count in the load average (about ``own_threads``);
    more than that, beyond one, means other processes competed for the cores.
    """
    cores = os.cpu_count() or 1
    if not hasattr(os, "getloadavg"):
        return f"{cores} cores; load average not available on this platform"
    end = os.getloadavg()
    others = max(START_LOAD, end[0]) - own_threads
    verdict = (
        "quiet: no other job competed for the cores"
        if others < 1
        else "shared: other jobs competed for the cores, so absolute times are noisy; ratios "
        "are measured back to back in the same run"
    )
    return (
        f"1-min load average {START_LOAD:.1f} at the start, {end[0]:.1f} / {end[1]:.1f} / "
        f"{end[2]:.1f} (1 / 5 / 15 min) at the end on {cores} cores, this benchmark's own "
        f"{own_threads} thread(s) included ({verdict})"
    )


def machine() -> str:
    """The machine and software a torch benchmark ran on, with the date, for its report."""
    import datetime
    import platform

    import numpy as np
    import torch

    return (
        f"`{platform.processor() or platform.machine()}`, {os.cpu_count() or 1} cores, "
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} intra-op thread(s)), numpy {np.__version__}, "
        f"{datetime.date.today().isoformat()}"
    )


def save_report(path, text: str) -> None:
    """Write a benchmark's markdown report (creating its folder) and say where."""
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")
    print(f"wrote {path}")
