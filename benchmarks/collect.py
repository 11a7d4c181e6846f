"""Assemble benchmarks/RESULTS.md from the sections each benchmark writes to results/.

Run the benchmarks first (each `python benchmarks/bench_<topic>.py` rewrites its own
`results/<topic>.md`), then `python benchmarks/collect.py`.
"""

from __future__ import annotations

import platform
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = [
    "theory",
    "propagation",
    "graph",
    "dct",
    "prune",
    "jacobian",
    "check",
    "train",
    "watch",
    "sweep",
]


def main() -> None:
    sections = {p.stem: p for p in (HERE / "results").glob("*.md")}
    names = [n for n in ORDER if n in sections] + sorted(set(sections) - set(ORDER))
    out = [
        "# Benchmark results",
        "",
        "Each benchmark measures sigprop and its baseline in the same run and reports ratios;",
        "the sections below are copied from `benchmarks/results/<topic>.md` (regenerate with",
        "`python benchmarks/bench_<topic>.py`, then `python benchmarks/collect.py`). Each",
        "section names the machine and the conditions it was measured under.",
        "",
        f"Collected on: {platform.machine()}, {platform.python_version()}.",
        "",
        "Contents: " + ", ".join(f"[{n}](#{n})" for n in names),
        "",
    ]
    for name in names:
        text = sections[name].read_text().strip().splitlines()
        if not text[0].startswith("## "):  # sections start at level 1 or 2; make them level 2
            text = [("#" + line) if line.startswith("#") else line for line in text]
        out += [f'<a id="{name}"></a>', ""] + text
        out.append("")
    (HERE / "RESULTS.md").write_text("\n".join(out))


if __name__ == "__main__":
    main()
