"""``sigprop sweep CONFIG``: run a resumable grid of runs locally or on a Dask cluster.

Exit status: 0 when no run of the grid failed (runs left pending by ``--max-runs`` or held
by another sweep running on the same results file are reported on stderr), 1 when some run
failed (its error is in the results file; rerun with ``--retry-failed``), 2 when the config,
the options, the results file or the scheduler cannot be used (one line on stderr).

A config is data, checked before anything runs: its ``run`` must be a registered run. With
``--allow-import`` it may name ``package.module:function``, which is imported and called on
every worker: the config is then code, to be run only if you would run it as a script.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="run a grid of experiments (resumable; local processes or Dask)",
        description=(
            "Run every grid point of a TOML sweep config that is not yet in the results "
            "file, appending one JSON line per run, then print a summary table (seeds "
            "averaged). Interrupt it any time and start it again to resume."
        ),
    )
    p.add_argument("config", help="TOML sweep config (see examples/sweep.toml)")
    p.add_argument(
        "--allow-import",
        action="store_true",
        help="let the config's run be 'package.module:function', imported and called on "
        "every worker: the config is then CODE; use only with a config you would run as a "
        "script (default: registered runs only)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="Dask scheduler address (tcp://host:8786) of a cluster you trust (Dask sends "
        "pickled data); default: local processes",
    )
    p.add_argument(
        "--connect-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long to wait for the Dask scheduler to answer (default 10)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="local worker processes, at most 256 (default: the config's 'workers', else one "
        "per CPU; 0 = run in this process)",
    )
    p.add_argument(
        "--out",
        metavar="FILE",
        help="results file, JSON Lines (default: the config's 'out' -- a relative path inside "
        "the current directory --, else the config's name with the suffix .jsonl in the "
        "current directory); several sweeps may share it: each point runs once",
    )
    p.add_argument("--retry-failed", action="store_true", help="run failed grid points again")
    p.add_argument("--max-runs", type=int, metavar="N", help="stop after N runs (resume later)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        metavar="N",
        help="torch threads per worker (default 1)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _printable(text, limit: int = 300) -> str:
    """``text`` for a terminal: control characters escaped, at most ``limit`` characters."""
    text = str(text)[:limit]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from sigprop.experiments.sweep import (
        Sweep,
        format_table,
        iter_results,
        read_config,
        run_sweep,
        summary_table,
        sweep_rows,
    )
    from sigprop.experiments.sweep.config import check_config, check_workers

    config_path = Path(args.config)
    config = read_config(config_path)
    sweep = Sweep.from_dict(config, allow_import=args.allow_import)
    fields = check_config(config)
    if args.out:
        out = Path(args.out)
    elif "out" in fields:
        out = fields["out"]
    else:
        out = Path(config_path.with_suffix(".jsonl").name)
    workers = check_workers(args.workers) if args.workers is not None else fields.get("workers")
    report = run_sweep(
        sweep,
        out,
        workers=workers,
        scheduler=args.scheduler,
        retry_failed=args.retry_failed,
        max_runs=args.max_runs,
        torch_threads=args.threads,
        progress=not args.no_progress,
        allow_import=args.allow_import,
        connect_timeout=args.connect_timeout,
    )
    rows = sweep_rows(sweep, iter_results(out))
    print(
        f"sweep {sweep.name}: {report.total} runs, {report.skipped} already done, "
        f"{report.ran} ran now ({report.ok} ok, {report.failed} failed) "
        f"in {report.wall_time:.1f} s [{report.executor}]; results in {_printable(out)}"
    )
    table = format_table(summary_table(rows, metrics=sweep.summary))
    print("\n".join(_printable(line, limit=10_000) for line in table.splitlines()))
    failed = [r for r in rows if r["status"] != "ok"]
    for r in failed[:5]:
        err = r.get("error") or {}
        print(
            f"failed {_printable(r['params'])}: {_printable(err.get('type'))}: "
            f"{_printable(err.get('message'))}",
            file=sys.stderr,
        )
    if len(failed) > 5:
        print(f"... and {len(failed) - 5} more failed runs", file=sys.stderr)
    missing = report.total - len(rows)
    if missing:
        held = f" ({report.elsewhere} of them running in another sweep)" if report.elsewhere else ""
        print(f"{missing} runs still pending{held}", file=sys.stderr)
    return 1 if failed else 0
