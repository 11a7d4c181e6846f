"""Runs for sweep tests that need a run to take a while without importing torch.

Named in a sweep as ``"tests.experiments.sweep_runs:nap"`` (so with ``allow_import`` /
``--allow-import``); the repository root must be on the importing process's path.
"""

import os
import time


def nap(*, seconds: float, i: int = 0) -> dict:
    """Sleep ``seconds`` and report which process ran point ``i``."""
    time.sleep(seconds)
    return {"i": i, "pid": os.getpid()}
