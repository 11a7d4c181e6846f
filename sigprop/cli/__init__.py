"""The ``sigprop`` command line.

Each subcommand lives in its own module of this package and exposes two functions:

``register(subparsers)``
    add an ``argparse`` sub-parser and ``set_defaults(func=run)``;
``run(args) -> int``
    call the library, print, and return the exit status.

Subcommand modules must be cheap to import (import torch, matplotlib, ... inside ``run``),
so that ``sigprop eoc`` never pays for torch. The dispatcher maps exception *types* to exit
codes: :class:`sigprop.validate.InvalidInput` (sigprop's verdict on the user's input, its
subclasses ``InvalidType`` and ``CheckpointError`` included) and ``OSError`` become a
one-line message on stderr and exit status 2; any other exception (a ``ValueError`` raised
inside numpy or torch, or an :class:`InternalError` raised by a subcommand) is reported in
one line as an internal error with exit status 3 (set ``SIGPROP_DEBUG=1`` for the traceback).
A closed output pipe (``sigprop eoc tanh --json | head -1``) ends the command silently with
exit status 141 (128 + SIGPIPE, what a process killed by SIGPIPE reports).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from sigprop.validate import InvalidInput

#: Exit status of an error inside sigprop or a library it calls (not the user's input).
EXIT_INTERNAL = 3
#: Exit status when stdout is closed early by the reader (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141


class InternalError(Exception):
    """Raised by a subcommand to report a failure that is not the user's input (exit 3)."""


#: Subcommand modules, in the order ``sigprop --help`` lists them.
SUBCOMMANDS = (
    "eoc",
    "phase",
    "check",
    "demo",
    "figures",
    "sweep",
    "plot_watch",
    "spp",
    "trainability",
)


def build_parser() -> argparse.ArgumentParser:
    from sigprop import __version__

    parser = argparse.ArgumentParser(
        prog="sigprop",
        description="Signal propagation in sparse neural networks: theory against experiment.",
    )
    parser.add_argument("--version", action="version", version=f"sigprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"sigprop.cli.{name}")
        except ModuleNotFoundError as exc:  # a subcommand not built yet
            if exc.name != f"sigprop.cli.{name}":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return status
    except KeyboardInterrupt:
        print("sigprop: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except InternalError as exc:
        if os.environ.get("SIGPROP_DEBUG"):
            raise
        print(
            f"sigprop {args.command}: internal error: {_one_line(exc)} "
            "(set SIGPROP_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    except (InvalidInput, OSError) as exc:
        if os.environ.get("SIGPROP_DEBUG"):
            raise
        print(f"sigprop {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI never shows a traceback by default
        if os.environ.get("SIGPROP_DEBUG"):
            raise
        print(
            f"sigprop {args.command}: internal error ({type(exc).__name__}): {_one_line(exc)} "
            "(set SIGPROP_DEBUG=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _discard_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush of the unwritten buffer
    does not fail again on the closed pipe."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced stdout (tests, notebooks)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())


def entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
