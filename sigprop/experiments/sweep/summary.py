"""Summaries of results: a table of means over seeds, and the accuracy-against-density
figure (this side loads the rows; :mod:`sigprop.plotting.training` only draws them)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from sigprop.experiments.sweep.store import iter_results, latest_rows

__all__ = ["format_table", "plot_accuracy_vs_density", "summary_table"]


def _is_number(v) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def summary_table(
    rows: Sequence[Mapping],
    *,
    group_over: Sequence[str] = ("seed",),
    metrics: Sequence[str] = (),
    max_metrics: int = 3,
) -> list[dict]:
    """Aggregate result rows into one line per parameter setting.

    Rows are grouped by their parameters minus ``group_over`` (default: the seed, so seeds
    are averaged); each line has the varying parameters, ``n`` (runs), ``failed`` (error
    rows) and for every metric the mean and, with more than one run, the sample standard
    deviation (``<metric>_std``). ``metrics`` defaults to the first ``max_metrics`` numeric
    scalar results found.
    """
    rows = list(latest_rows(rows).values())
    if not rows:
        return []
    all_params = [r.get("params", {}) for r in rows]
    names = sorted(set().union(*(p.keys() for p in all_params)) - set(group_over))
    varying = [n for n in names if len({json.dumps(p.get(n)) for p in all_params}) > 1]
    if not metrics:
        found: list[str] = []
        for r in rows:
            for k, v in (r.get("result") or {}).items():
                if _is_number(v) and k not in found:
                    found.append(k)
        metrics = found[:max_metrics]
    groups: dict[str, list[Mapping]] = {}
    for r in rows:
        gkey = json.dumps({n: r.get("params", {}).get(n) for n in varying}, sort_keys=True)
        groups.setdefault(gkey, []).append(r)
    table = []
    for members in groups.values():
        line = {n: members[0].get("params", {}).get(n) for n in varying}
        ok = [m for m in members if m["status"] == "ok"]
        line["n"] = len(members)
        line["failed"] = len(members) - len(ok)
        for metric in metrics:
            values = [m["result"].get(metric) for m in ok]
            values = [float(v) for v in values if _is_number(v)]
            if values:
                mean = sum(values) / len(values)
                line[metric] = mean
                if len(values) > 1:
                    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
                    line[f"{metric}_std"] = math.sqrt(var)
            else:
                line[metric] = None
        table.append(line)
    return table


def format_table(table: Sequence[Mapping]) -> str:
    """Plain-text table of :func:`summary_table` lines (``mean ± std`` where available)."""
    if not table:
        return "(no runs)"
    columns = [c for c in table[0] if not c.endswith("_std")]
    for line in table[1:]:
        columns += [c for c in line if c not in columns and not c.endswith("_std")]

    def cell(line, col):
        v = line.get(col)
        if v is None:
            return "-"
        if isinstance(v, float):
            text = f"{v:.4g}"
            std = line.get(f"{col}_std")
            return f"{text} ± {std:.2g}" if std is not None else text
        return str(v)

    cells = [[cell(line, c) for c in columns] for line in table]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    out = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def plot_accuracy_vs_density(
    rows: Iterable[Mapping] | str | os.PathLike, path: str | os.PathLike, **options
) -> Path:
    """:func:`sigprop.plotting.training.plot_accuracy_vs_density` of sweep rows or of a
    results file: the latest row of each run key, ``ok`` rows only (``options`` are that
    function's: ``metric``, ``group``, ``x``, ``where``, ``dense``, ``title``)."""
    from sigprop.plotting.training import plot_accuracy_vs_density as draw

    if isinstance(rows, str | os.PathLike):
        rows = iter_results(rows)
    latest = [r for r in latest_rows(rows).values() if r.get("status") == "ok"]
    return draw(latest, path, **options)
