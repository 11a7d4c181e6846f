"""Sweep config files: bounded reading and parsing of TOML, and the checks of every field.

A config comes from someone else, so it is read as hostile input: at most
:data:`MAX_CONFIG_BYTES` bytes of a regular file (never a FIFO or a device), UTF-8, arrays
and tables nested at most :data:`MAX_CONFIG_DEPTH` deep — checked on the text before
``tomllib`` sees it (a lexer-level scan that skips strings and comments, for brackets and
dotted keys), and again on the parsed tables — then every field is checked with
:mod:`sigprop.validate`. Anything wrong raises :class:`~sigprop.validate.InvalidInput`
(:class:`~sigprop.validate.InvalidType` for a wrong type) naming the field.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from sigprop.validate import InvalidInput, InvalidType, nonneg_int

__all__ = [
    "CONFIG_KEYS",
    "MAX_CONFIG_BYTES",
    "MAX_CONFIG_DEPTH",
    "MAX_NAME_CHARS",
    "MAX_WORKERS",
    "check_config",
    "check_label",
    "check_workers",
    "config_out",
    "parse_config",
    "read_config",
    "read_regular_file",
]

#: The keys a sweep config may have.
CONFIG_KEYS = ("run", "name", "grid", "fixed", "summary", "out", "workers")
#: Largest config file read (bytes).
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting of arrays and tables in a config.
MAX_CONFIG_DEPTH = 32
#: Longest run name, sweep name, parameter name or summary column (characters).
MAX_NAME_CHARS = 200
#: Most local worker processes one sweep may start.
MAX_WORKERS = 256
#: Longest ``out`` path in a config (characters).
MAX_PATH_CHARS = 4096

# Strings and comments of TOML, in the order its lexer tries them at one position; what
# is left after blanking them out holds every bracket that nests.
_TOML_OPAQUE = re.compile(
    r'"""(?:[^\\]|\\.)*?"""'  # multi-line basic string
    r"|'''.*?'''"  # multi-line literal string
    r'|"(?:[^"\\\n]|\\.)*"'  # basic string
    r"|'[^'\n]*'"  # literal string
    r"|#[^\n]*",  # comment
    re.S,
)


def read_regular_file(path: str | os.PathLike, limit: int, what: str) -> bytes:
    """The bytes of ``path``, refused unless it is a regular file of at most ``limit`` bytes.

    Opened without blocking, so a FIFO is refused instead of waiting for a writer; at most
    ``limit + 1`` bytes are ever read, whatever the file claims to be.
    """
    fd = os.open(os.fspath(path), os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise InvalidInput(f"{what} {path} is not a regular file")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise InvalidInput(f"{what} {path} is larger than {limit} bytes")
    return data


# a dotted key of more than MAX_CONFIG_DEPTH parts, once strings are blanked to "s"
_DOTTED = re.compile(r"(?:[A-Za-z0-9_-]+[ \t]*\.[ \t]*){" + str(MAX_CONFIG_DEPTH) + ",}")


def _too_deep(text: str) -> bool:
    """Whether ``text`` nests arrays/tables deeper than :data:`MAX_CONFIG_DEPTH`: brackets
    outside strings and comments (a closer without its opener cannot hide depth: the
    measure is the largest rise of the running count), or a dotted key of more parts
    (``tomllib`` takes time quadratic in their number)."""
    blanked = _TOML_OPAQUE.sub("s", text)
    if _DOTTED.search(blanked):
        return True
    code = np.frombuffer(blanked.encode(), dtype=np.uint8)
    if code.size == 0:
        return False
    step = (
        (code == ord("[")).astype(np.int64)
        + (code == ord("{"))
        - (code == ord("]"))
        - (code == ord("}"))
    )
    running = np.concatenate(([0], np.cumsum(step)))
    return int(np.max(running - np.minimum.accumulate(running))) > MAX_CONFIG_DEPTH


def _value_depth(value: Any) -> int:
    """Nesting depth of parsed tables and arrays, without recursion."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_CONFIG_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_config(data: bytes | str, source: str = "sweep config") -> dict:
    """Parse the text of a TOML sweep config within the bounds of the module docstring."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    if isinstance(data, bytes):
        if len(data) > MAX_CONFIG_BYTES:
            raise InvalidInput(f"{source} is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInput(
                f"{source}: not UTF-8 text (byte {exc.start}: {data[exc.start : exc.start + 1]!r})"
            ) from None
    elif isinstance(data, str):
        text = data
        if len(text) > MAX_CONFIG_BYTES:
            raise InvalidInput(f"{source} is larger than {MAX_CONFIG_BYTES} characters")
    else:
        raise InvalidType(f"a sweep config is text or bytes, got {type(data).__name__}")
    if _too_deep(text):
        raise InvalidInput(f"{source}: arrays or tables nested deeper than {MAX_CONFIG_DEPTH}")
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # the message carries the line and column
        raise InvalidInput(f"{source}: not valid TOML: {exc}") from None
    if _value_depth(config) > MAX_CONFIG_DEPTH:
        raise InvalidInput(f"{source}: tables nested deeper than {MAX_CONFIG_DEPTH}")
    return config


def read_config(path: str | os.PathLike) -> dict:
    """Read and parse a TOML sweep config file (see the module docstring for the bounds)."""
    return parse_config(read_regular_file(path, MAX_CONFIG_BYTES, "sweep config"), str(path))


def check_label(value: Any, name: str, *, identifier: bool = False) -> str:
    """A short printable string (a run, sweep, parameter or column name)."""
    if not isinstance(value, str):
        raise InvalidType(f"{name} must be a string, got {type(value).__name__}")
    if not value or len(value) > MAX_NAME_CHARS:
        raise InvalidInput(f"{name} must have 1 to {MAX_NAME_CHARS} characters")
    if identifier and not value.isidentifier():
        raise InvalidInput(f"{name} must be a Python identifier, got {value!r}")
    if not value.isprintable():
        raise InvalidInput(f"{name} must be printable text, got {value!r}")
    return value


def check_workers(value: Any, name: str = "workers") -> int | None:
    """A number of local worker processes: ``None`` or an integer in [0, MAX_WORKERS]."""
    if value is None:
        return None
    n = nonneg_int(value, name)
    if n > MAX_WORKERS:
        raise InvalidInput(f"{name} must be at most {MAX_WORKERS}, got {n}")
    return n


def config_out(value: Any) -> Path:
    """The ``out`` of a config: a relative path inside the current directory.

    A config may come from someone else, so it cannot send the results anywhere else (an
    absolute path or ``..``); ``--out`` on the command line can.
    """
    if not isinstance(value, str):
        raise InvalidType(f"out must be a string path, got {type(value).__name__}")
    if not value or len(value) > MAX_PATH_CHARS or "\x00" in value or not value.isprintable():
        raise InvalidInput("out must be a non-empty printable path")
    pure = PurePath(value)
    if pure.is_absolute() or ".." in pure.parts or value.startswith("~"):
        raise InvalidInput(
            f"out in a config must be a relative path inside the current directory, got "
            f"{value!r} (pass --out to write elsewhere)"
        )
    return Path(value)


def check_config(config: Any) -> dict:
    """Check the layout and the scalar fields of a parsed config; return a copy.

    ``grid`` and ``fixed`` must be tables and ``summary`` an array of strings; the values
    of the grid and fixed parameters are checked by :class:`~sigprop.experiments.sweep.Sweep`.
    """
    if not isinstance(config, Mapping):
        raise InvalidType(f"a sweep config is a table, got {type(config).__name__}")
    unknown = [k for k in config if k not in CONFIG_KEYS]
    if unknown:
        shown = sorted(repr(k)[:60] for k in unknown)[:5]
        raise InvalidInput(
            f"unknown sweep config key(s) [{', '.join(shown)}]; allowed: {sorted(CONFIG_KEYS)}"
        )
    if "run" not in config:
        raise InvalidInput("sweep config needs a 'run' (e.g. run = \"train_pruned\")")
    out = dict(config)
    check_label(config["run"], "run")
    if "name" in config:
        check_label(config["name"], "name")
    for table in ("grid", "fixed"):
        if table in config and not isinstance(config[table], Mapping):
            raise InvalidType(f"{table} must be a table, got {type(config[table]).__name__}")
    summary = config.get("summary", [])
    if not isinstance(summary, list | tuple):
        raise InvalidType(f"summary must be a list of result names, got {type(summary).__name__}")
    if len(summary) > MAX_NAME_CHARS:
        raise InvalidInput(f"summary lists more than {MAX_NAME_CHARS} result names")
    out["summary"] = [check_label(s, f"summary[{i}]") for i, s in enumerate(summary)]
    if "out" in config:
        out["out"] = config_out(config["out"])
    if "workers" in config:
        out["workers"] = check_workers(config["workers"])
    return out
