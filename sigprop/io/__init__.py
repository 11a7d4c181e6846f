"""Safe loading of (pruned) model checkpoints.

:func:`load_checkpoint` reads a file from anywhere without running code stored in it, and
within bounded memory and time (:mod:`sigprop.io.limits`):

* ``torch.save`` archives (``.pt``/``.pth``, zip or legacy format) are read by sigprop's own
  reader (:mod:`sigprop.io.torch_files`): the pickle runs against an allow-list bound to
  inert recorders (:mod:`sigprop.io.pickles`), the zip structure is checked entry by entry
  (:mod:`sigprop.io.zipview`), and tensor data stays in the file until it is read;
* safetensors files: the header is validated here, then by the ``safetensors`` library
  (:mod:`sigprop.io.safetensors_files`);
* ``torch.export`` programs (``.pt2``): the graph is read from the archive's JSON, never
  through ``torch.export.load`` (:mod:`sigprop.io.export`);
* a pickle that references code (a full ``nn.Module``, ``os.system``) is refused unless
  ``trust_pickle=True``, which hands the file to ``torch.load(weights_only=False)`` or
  ``torch.export.load``: only for a file you trust.

The file is opened once (a FIFO, device or directory is refused first) and read with
``pread`` (:mod:`sigprop.io.source`): a file truncated or rewritten during a check gives a
one-line :class:`CheckpointError` ("file changed while being read"), never a crash.

Recognised state-dict layouts are listed in :mod:`sigprop.io.layers`. Every problem is a
:class:`CheckpointError` (an :class:`~sigprop.validate.InvalidInput`) with a one-line,
printable reason: empty, special or unreadable files, truncated or inconsistent archives,
pickles that reference code, JSON, non-tensor values, NaN/inf values, masks of the wrong
shape or not 0/1, 0-d, empty or higher-rank weights, files without weight layers, and any
file beyond a bound.

Tensors of a :class:`Checkpoint` are :class:`LazyTensor` objects: read them with
:meth:`LazyTensor.load` or stream them with :meth:`LazyTensor.iter_rows`, which reads one
block of rows at a time (as torch tensors; :meth:`LazyTensor.load_array` and
:meth:`LazyTensor.iter_arrays` give numpy arrays, and reading a safetensors file that way
never imports torch).

With ``arch="torchvision:resnet18"`` (``timm:NAME``, ``module.path:factory``) a state dict
is also loaded strictly into that architecture, built with random weights
(:mod:`sigprop.io.arch`): the checkpoint's ``module`` is then the model holding the file's
tensors, whose traced graph :func:`sigprop.diagnostics.check_collapse` follows.
"""

from __future__ import annotations

import json
import os

from sigprop.io import limits
from sigprop.io.lazy import LazyTensor
from sigprop.io.records import Checkpoint, LayerEntry, LayerTensors
from sigprop.io.source import CheckpointError, FileChanged, printable
from sigprop.io.torch_files import WRAPPER_KEYS

__all__ = [
    "WRAPPER_KEYS",
    "Checkpoint",
    "CheckpointError",
    "FileChanged",
    "LayerEntry",
    "LayerTensors",
    "LazyTensor",
    "load_checkpoint",
    "printable",
]


def load_checkpoint(
    path: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    validate_values: bool = True,
    arch: str | None = None,
) -> Checkpoint:
    """Read a checkpoint safely; see the module docstring for the formats.

    Parameters
    ----------
    path:
        the file.
    trust_pickle:
        allow unpickling arbitrary objects (a full ``nn.Module``, a ``.pt2`` with pickled
        parts). Only for files you trust: unpickling runs code from the file.
    validate_values:
        stream every floating tensor to reject NaN/inf, and every mask to reject values
        other than 0 and 1. ``False`` leaves that to the consumer (``check_collapse``
        validates the layers it scans).
    arch:
        ``torchvision:NAME``, ``timm:NAME`` or ``module.path:factory``: build that
        architecture (:func:`sigprop.nn.arch.build_model`, nothing downloaded) and load the
        state dict into it strictly; the result's ``module`` is that model and ``arch`` the
        spec. ``module.path:factory`` imports and runs that module: only name your own code.

    Raises
    ------
    CheckpointError
        with a one-line reason when the file cannot be used, or does not fit ``arch``
        (missing or unexpected keys, shape mismatches: the first few names).
    """
    from sigprop.io.source import FileSource

    if arch is not None:
        from sigprop.nn.arch import parse_arch_spec

        parse_arch_spec(arch)  # a malformed spec fails before the file is read
    source = FileSource(os.fspath(path))
    if source.size == 0:
        raise CheckpointError(f"{source.display}: empty file")
    head = source.head(64)
    kind = _sniff(source, head)
    if kind == "zip":
        ckpt = _load_zip(source, trust_pickle)
    elif kind == "pickle":
        ckpt = _with_trust(source, trust_pickle, _legacy)
    elif kind == "safetensors":
        from sigprop.io.safetensors_files import load_safetensors

        ckpt = load_safetensors(source)
    else:
        raise CheckpointError(f"{source.display}: {kind}")
    if validate_values:
        ckpt.validate_values()
    if arch is not None:
        from sigprop.io.arch import with_arch
        from sigprop.validate import InvalidInput

        try:
            ckpt = with_arch(ckpt, arch)
        except CheckpointError:
            raise
        except InvalidInput as exc:  # its message may quote names from the file
            raise CheckpointError(str(exc)) from None
    return ckpt


def _legacy(source):
    from sigprop.io.torch_files import load_legacy

    return load_legacy(source)


def _load_zip(source, trust_pickle: bool) -> Checkpoint:
    from sigprop.io.export import is_export, load_export
    from sigprop.io.torch_files import load_zip
    from sigprop.io.zipview import ZipView

    view = ZipView(source)
    if is_export(view):
        return load_export(source, view, trust_pickle)
    return _with_trust(source, trust_pickle, lambda s: load_zip(s, view))


def _with_trust(source, trust_pickle: bool, load) -> Checkpoint:
    from sigprop.io.pickles import PickleRefused
    from sigprop.io.torch_files import load_trusted

    try:
        return load(source)
    except PickleRefused:
        if not trust_pickle:
            raise
    return load_trusted(source)


def _sniff(source, head: bytes) -> str:
    size = source.size
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"  # a truncated archive is reported by the zip reader
    if len(head) >= 9:
        n = int.from_bytes(head[:8], "little")
        if 2 <= n and head[8:9] == b"{" and (n <= size - 8 or n > limits.MAX_JSON_BYTES):
            return "safetensors"
    if head[:1] == b"\x80" and len(head) >= 2 and 2 <= head[1] <= 5:
        return "pickle"
    stripped = head.lstrip()
    if stripped[:1] in (b"{", b"[") and size <= limits.MAX_SNIFF_JSON_BYTES:
        try:
            json.loads(source.pread(0, size).decode("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            pass
        else:
            return "a JSON document, not a checkpoint (expected torch.save, safetensors or .pt2)"
    if head[:1] in (b"(", b"]", b"}", b"c", b"\x80"):
        return "pickle"
    return (
        "unrecognised file format: not a torch.save archive, a safetensors file "
        "or a torch.export program"
    )
