"""``sigprop plot-watch LOG_DIR --out fig.png``: draw a ``sigprop.watch`` log."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "plot-watch",
        help="draw a sigprop.watch log (gradient flow, density, theory vs measurement)",
        description=(
            "Read LOG_DIR/sigprop.jsonl (or the given .jsonl file), written by sigprop.watch, "
            "and draw per-layer gradient flow over training (log gradient norm, layer x "
            "step), the density of every layer (DSR's reallocation) and, when the log has a "
            "prediction, the theory beside the measurement. A malformed log is exit 2."
        ),
    )
    p.add_argument("log_dir", metavar="LOG_DIR", help="watch log folder or .jsonl file")
    p.add_argument("--out", required=True, help="output PNG")
    p.add_argument("--title", default=None)
    p.add_argument(
        "--max-records",
        type=int,
        default=None,
        help="refuse logs with more records than this (default 1000000)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from sigprop.plotting.watch import plot_watch
    from sigprop.watcher import read_log

    bounds = {} if args.max_records is None else {"max_records": args.max_records}
    log = read_log(args.log_dir, **bounds)
    path = plot_watch(log, args.out, title=args.title)
    note = " (a torn last line was skipped)" if log.torn else ""
    print(f"{path}: {len(log.steps)} records, {len(log.layers)} layers{note}")
    return 0
