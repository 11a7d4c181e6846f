"""The :class:`Sweep`: a run name, a grid of parameter lists, fixed parameters.

Its runs are the Cartesian product of the grid, duplicates removed. The product is sized
from the lengths of the grid's lists before anything is expanded, and refused above
:data:`MAX_POINTS`.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sigprop.experiments.runs import check_run_ref
from sigprop.experiments.sweep.config import check_config, check_label, read_config
from sigprop.experiments.sweep.keys import canonical, encode_value
from sigprop.validate import InvalidInput, InvalidType

__all__ = ["MAX_POINTS", "Sweep"]

#: Most runs one sweep may have (after duplicates are removed).
MAX_POINTS = 100_000


@dataclass(frozen=True)
class Sweep:
    """A grid of runs.

    Attributes
    ----------
    run : str
        A run registered in :data:`sigprop.experiments.runs.RUNS` or ``"module:function"``
        (which :func:`~sigprop.experiments.sweep.run_sweep` imports only when it is given
        ``allow_import=True``).
    grid : dict of str to tuple
        Parameter name → the values to sweep; the runs are the Cartesian product, in the
        order of the keys and values given (the last key varies fastest).
    fixed : dict
        Parameters shared by every run.
    name : str
        A label for reports (default: the run name).
    summary : tuple of str
        Result keys the summary table shows (default: the first few numeric ones).

    Parameter names are Python identifiers; values are JSON values
    (:mod:`sigprop.experiments.sweep.keys`: NaN and ±inf included).
    """

    run: str
    grid: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    name: str = ""
    summary: tuple[str, ...] = ()

    def __post_init__(self):
        if not isinstance(self.run, str) or not self.run:
            raise InvalidInput(f"run must be a run name or 'module:function', got {self.run!r:.80}")
        check_label(self.run, "run")
        if not isinstance(self.grid, Mapping) or not isinstance(self.fixed, Mapping):
            raise InvalidType("grid and fixed must be mappings of parameter names to values")
        for key in [*self.grid, *self.fixed]:
            check_label(key, f"parameter name {key!r:.80}", identifier=True)
        grid = {}
        for key, values in self.grid.items():
            if isinstance(values, str | bytes) or not isinstance(values, Sequence):
                raise InvalidType(
                    f"grid[{key!r}] must be a list of values, got {type(values).__name__} "
                    "(put single values under 'fixed')"
                )
            if len(values) == 0:
                raise InvalidInput(f"grid[{key!r}] is empty")
            grid[key] = tuple(values)
        both = set(grid) & set(self.fixed)
        if both:
            raise InvalidInput(f"parameter(s) {sorted(both)} are both in grid and in fixed")
        for key, value in self.fixed.items():
            encode_value(value, f"fixed.{key}")
        for key, values in grid.items():
            for i, value in enumerate(values):
                encode_value(value, f"grid.{key}[{i}]")
        size = math.prod(len(_distinct(v)) for v in grid.values())
        if size > MAX_POINTS:
            raise InvalidInput(
                f"the grid has {size} distinct runs; a sweep has at most {MAX_POINTS} "
                "(split it into several sweeps)"
            )
        if isinstance(self.summary, str) or not isinstance(self.summary, Sequence):
            raise InvalidType("summary must be a list of result names")
        summary = tuple(check_label(s, f"summary[{i}]") for i, s in enumerate(self.summary))
        if not isinstance(self.name, str):
            raise InvalidType(f"name must be a string, got {type(self.name).__name__}")
        if self.name:
            check_label(self.name, "name")
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "fixed", dict(self.fixed))
        object.__setattr__(self, "summary", summary)
        object.__setattr__(self, "name", self.name or self.run)

    @classmethod
    def from_dict(cls, config: Mapping, *, allow_import: bool = False) -> Sweep:
        """From a parsed config (the TOML layout; ``out``/``workers`` are checked, not kept).

        A ``run`` that is a ``"module:function"`` path is refused unless ``allow_import``:
        with it, the config names code to import and call.
        """
        config = check_config(config)
        check_run_ref(config["run"], allow_import=allow_import)
        return cls(
            run=config["run"],
            grid=dict(config.get("grid", {})),
            fixed=dict(config.get("fixed", {})),
            name=config.get("name", ""),
            summary=tuple(config["summary"]),
        )

    @classmethod
    def from_toml(cls, path: str | os.PathLike, *, allow_import: bool = False) -> Sweep:
        """Read a TOML sweep config (bounded: :mod:`sigprop.experiments.sweep.config`)."""
        return cls.from_dict(read_config(path), allow_import=allow_import)

    def size(self) -> int:
        """The number of distinct runs, without expanding the grid."""
        return math.prod(len(_distinct(v)) for v in self.grid.values())

    def points(self) -> list[dict]:
        """The runs' parameter dicts (``fixed`` merged in), duplicates removed, in grid order."""
        keys = list(self.grid)
        axes = [_distinct(self.grid[k]) for k in keys]
        return [{**self.fixed, **dict(zip(keys, values))} for values in itertools.product(*axes)]

    def to_dict(self) -> dict:
        """The sweep as strict JSON (non-finite floats tagged as in the results file)."""
        return encode_value(
            {
                "run": self.run,
                "name": self.name,
                "grid": {k: list(v) for k, v in self.grid.items()},
                "fixed": dict(self.fixed),
                "summary": list(self.summary),
            },
            "Sweep",
        )


def _distinct(values: Sequence) -> list:
    """``values`` without repeats, first occurrence kept; two values are the same when their
    JSON forms are (so 1 and 1.0 differ, and nan, inf, -inf are three values)."""
    seen, out = set(), []
    for v in values:
        text = canonical({"v": v})
        if text not in seen:
            seen.add(text)
            out.append(v)
    return out
