"""One renderer from claims to files: the Markdown report and the JSON results of the demo.

``results.json`` keeps every number of every section (``sections``), one verdict line per
section (``verdicts``) and every claim as a dict (``claims``, :meth:`Claim.to_dict`), all
through :func:`sigprop._json.to_jsonable`, so it is strict JSON (no NaN). ``report.md``
states, per section, the prediction and the measurement, the claims table, the origin of
each tolerance and the agreement, with the section's figures.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from sigprop._json import to_jsonable
from sigprop.experiments.claims.config import DemoConfig
from sigprop.experiments.claims.core import Claim, Section

__all__ = ["claims_markdown", "report_markdown", "results_document", "write_report"]


def claims_markdown(claims: Sequence[Claim]) -> str:
    """The claims table, then one line per distinct error measure and tolerance origin."""
    from sigprop.plotting.report import markdown_table

    rows = [
        (
            f"`{c.id}`",
            c.source,
            c.prediction,
            c.measurement,
            c.error,
            c.tolerance,
            c.verdict if c.agrees else f"**{c.verdict}**",
        )
        for c in claims
    ]
    table = markdown_table(
        ["claim", "source", "prediction", "measurement", "error", "tolerance", "verdict"], rows
    )
    origins = dict.fromkeys((c.metric, c.derivation) for c in claims)
    lines = [table, "", "Error measures and tolerances:", ""]
    lines += [f"- {metric}; tolerance: {derivation}." for metric, derivation in origins]
    return "\n".join(lines)


def report_markdown(
    cfg: DemoConfig,
    sections: Sequence[Section],
    *,
    quick: bool,
    seed: int,
    device: str,
    seconds: float,
    environment: Mapping,
) -> str:
    """``report.md``: the network, the run, a summary of verdicts, then each section."""
    from sigprop.plotting.report import markdown_table

    claims = [c for s in sections for c in s.claims]
    n_ok = sum(c.agrees for c in claims)
    env = environment
    lines = [
        "# sigprop demo: will signal flow through this sparse network?",
        "",
        f"A {cfg.activation} MLP of {cfg.depth} weight layers ({cfg.depth - 1} hidden layers "
        f"of width {cfg.width} and a readout) on "
        f"`{cfg.dataset}`, initialised at the edge of chaos (σ_b = {cfg.sigma_b}) and pruned to "
        f"density ρ = {cfg.density} (fraction of weights kept). Each section states the "
        "theory's prediction, the measurement and their agreement in numbers; every number "
        "is in `results.json`, every claim under its `claims` key.",
        "",
        f"Run: {'`--quick`' if quick else 'full'}, seed {seed}, device `{device}`, "
        f"{seconds:.0f} s; sigprop {env['sigprop']}, torch {env['torch']}, "
        f"numpy {env['numpy']}, {env['machine']}.",
        "",
        "## Summary",
        "",
        f"{n_ok} of {len(claims)} claims agree with their measurement.",
        "",
        markdown_table(["section", "verdict"], [(s.title, s.verdict) for s in sections]),
        "",
    ]
    for s in sections:
        lines += [f"## {s.title}", "", s.markdown.strip(), ""]
        lines += ["**Claims.**", "", claims_markdown(s.claims), ""]
        lines += [f"**Agreement.** {s.verdict}.", ""]
        for f in s.figures:
            lines += [f"![{Path(f).stem}]({Path(f).name})", ""]
    return "\n".join(lines)


def results_document(
    cfg: DemoConfig,
    sections: Sequence[Section],
    *,
    quick: bool | None,
    seed: int,
    device: str,
    environment: Mapping,
    section_seconds: Mapping[str, float],
    seconds: float,
) -> dict:
    """``results.json`` as a JSON-ready dict (through :func:`sigprop._json.to_jsonable`)."""
    return to_jsonable(
        {
            "sigprop_demo": 1,
            "config": cfg.to_dict(),
            "quick": quick,
            "seed": seed,
            "device": device,
            "verdicts": {s.key: s.verdict for s in sections},
            "claims": [c.to_dict() for s in sections for c in s.claims],
            "sections": {s.key: s.numbers for s in sections},
            "environment": dict(environment),
            "section_seconds": dict(section_seconds),
            "seconds": round(seconds, 3),
        },
        "results",
    )


def write_report(out: str | Path, markdown: str, results: Mapping) -> tuple[Path, Path]:
    """Write ``report.md`` and ``results.json`` into ``out``, each atomically
    (:func:`sigprop.plotting.files.write_atomic`); returns their paths."""
    from sigprop.plotting.files import write_atomic

    out = Path(out)
    text = json.dumps(to_jsonable(results, "results"), indent=1, allow_nan=False) + "\n"
    results_path = write_atomic(out / "results.json", text)
    report_path = write_atomic(out / "report.md", markdown)
    return report_path, results_path
