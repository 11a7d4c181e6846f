"""A strict view of a zip archive (torch.save and ``torch.export`` files are zips).

Python's ``zipfile`` reads the central directory; this module then refuses every archive
whose parts disagree, because two readers that resolve a disagreement differently (Python's
``zipfile`` takes the last of two entries with the same name, torch's miniz the first) let a
file show one content to a screen and another to the loader:

* the end-of-central-directory record is parsed here as well and must agree with
  ``zipfile`` (entry count, no bytes prepended to the archive);
* entry names are unique, entries are neither encrypted nor compressed other than by
  deflate, each local header repeats its central-directory name, method and sizes, and the
  entries' byte ranges lie inside the file, before the central directory, without overlap;
* a deflated entry's declared size is bounded (:data:`~sigprop.io.limits.MAX_INFLATED_BYTES`)
  and consistent with its compressed size (:data:`~sigprop.io.limits.MAX_DEFLATE_RATIO`);
  inflating stops at the declared size and checks it and the CRC.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass

from sigprop.io import limits
from sigprop.io.source import CheckpointError, FileSource

__all__ = ["ZipEntry", "ZipView"]

_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"
_LOCAL = b"PK\x03\x04"


@dataclass(frozen=True)
class ZipEntry:
    """One member of the archive: where its bytes are and how they are stored."""

    name: str
    data_start: int  # file offset of the (possibly compressed) data
    size: int  # uncompressed size
    compressed_size: int
    method: int  # 0 stored, 8 deflated
    crc: int

    @property
    def stored(self) -> bool:
        return self.method == zipfile.ZIP_STORED


class _RawFile:
    """The minimal file interface ``zipfile`` needs, reading through :class:`FileSource`."""

    def __init__(self, source: FileSource) -> None:
        self._source = source
        self._pos = 0

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._source.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self._source.size if n is None or n < 0 else min(self._source.size, self._pos + n)
        data = self._source.pread(self._pos, max(0, end - self._pos))
        self._pos += len(data)
        return data


class ZipView:
    """The checked entry table of a zip archive (see the module docstring)."""

    def __init__(self, source: FileSource) -> None:
        self.source = source
        where = source.display
        cd_offset, n_entries = self._end_record()
        try:
            with zipfile.ZipFile(_RawFile(source)) as z:
                infos = z.infolist()
                start_dir = z.start_dir
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, ValueError) as exc:
            raise CheckpointError(f"{where}: truncated or corrupt zip archive ({exc})") from None
        except (struct.error, UnicodeDecodeError, OverflowError) as exc:
            raise CheckpointError(f"{where}: corrupt zip archive ({exc})") from None
        if start_dir != cd_offset or len(infos) != n_entries:
            raise CheckpointError(
                f"{where}: inconsistent zip archive (data before the archive or a central "
                "directory that disagrees with its end record)"
            )
        self.entries: dict[str, ZipEntry] = {}
        spans = []
        for info in infos:
            entry = self._check_entry(info, cd_offset)
            if entry.name in self.entries:
                raise CheckpointError(
                    f"{where}: zip archive holds two entries named {entry.name!r} (readers "
                    "disagree on which one counts)"
                )
            self.entries[entry.name] = entry
            spans.append((info.header_offset, entry.data_start + entry.compressed_size, entry.name))
        spans.sort()
        for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
            if start < end:
                raise CheckpointError(f"{where}: zip entries {a!r} and {b!r} overlap")
        self.names = [info.filename for info in infos]

    # ----- structure checks
    def _end_record(self) -> tuple[int, int]:
        src = self.source
        tail_len = min(src.size, 22 + 0xFFFF)
        tail = src.pread(src.size - tail_len, tail_len)
        pos = tail.rfind(_EOCD)
        if pos < 0 or len(tail) - pos < 22:
            raise CheckpointError(
                f"{src.display}: truncated or corrupt zip archive (no end of central directory)"
            )
        eocd_at = src.size - tail_len + pos
        disk, cd_disk, on_disk, total, cd_size, cd_offset, _ = struct.unpack(
            "<HHHHIIH", tail[pos + 4 : pos + 22]
        )
        loc = src.pread(eocd_at - 20, 20) if eocd_at >= 20 else b""
        needs64 = 0xFFFF in (total, on_disk) or 0xFFFFFFFF in (cd_size, cd_offset)
        if needs64 and loc[:4] != _EOCD64_LOCATOR:
            raise CheckpointError(f"{src.display}: corrupt zip64 archive (no locator)")
        if loc[:4] == _EOCD64_LOCATOR:  # torch (miniz) writes zip64 records always
            (rec_at,) = struct.unpack("<Q", loc[8:16])
            if rec_at + 56 > eocd_at:
                raise CheckpointError(f"{src.display}: corrupt zip64 archive")
            rec = src.pread(rec_at, 56)
            if rec[:4] != _EOCD64:
                raise CheckpointError(f"{src.display}: corrupt zip64 archive (no end record)")
            disk, cd_disk, on_disk, total, cd_size, cd_offset = struct.unpack("<IIQQQQ", rec[16:56])
            end_of_cd = rec_at
        else:
            end_of_cd = eocd_at
        if disk or cd_disk or on_disk != total:
            raise CheckpointError(f"{src.display}: multi-disk zip archives are not supported")
        if total > limits.MAX_ZIP_ENTRIES:
            raise CheckpointError(
                f"{src.display}: zip archive has {total} entries, more than the limit of "
                f"{limits.MAX_ZIP_ENTRIES}"
            )
        if cd_offset + cd_size != end_of_cd:
            raise CheckpointError(
                f"{src.display}: inconsistent zip archive (central directory at {cd_offset} "
                f"+ {cd_size} bytes does not end at its end record {end_of_cd})"
            )
        return cd_offset, total

    def _check_entry(self, info: zipfile.ZipInfo, cd_offset: int) -> ZipEntry:
        where = self.source.display
        name = info.filename
        if len(name) > limits.MAX_NAME_CHARS or "\x00" in name:
            raise CheckpointError(f"{where}: zip entry name {name[:80]!r}... is malformed")
        if info.flag_bits & 0x1:
            raise CheckpointError(f"{where}: zip entry {name!r} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(
                f"{where}: zip entry {name!r} uses compression method {info.compress_type} "
                "(only stored and deflated entries are read)"
            )
        if info.header_offset + 30 > cd_offset:
            raise CheckpointError(f"{where}: zip entry {name!r} lies outside the archive")
        local = self.source.pread(info.header_offset, 30)
        if local[:4] != _LOCAL:
            raise CheckpointError(f"{where}: zip entry {name!r} has no local header")
        (_, flags, method, _, _, crc, csize, usize, n_name, n_extra) = struct.unpack(
            "<HHHHHIIIHH", local[4:30]
        )
        raw_name = self.source.pread(info.header_offset + 30, n_name)
        local_name = raw_name.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
        if local_name != info.orig_filename or method != info.compress_type:
            raise CheckpointError(
                f"{where}: zip entry {name!r} disagrees with its local header (name or method)"
            )
        if not flags & 0x8:  # sizes are in the local header (no data descriptor)
            for local_value, central in (
                (crc, info.CRC),
                (csize, info.compress_size),
                (usize, info.file_size),
            ):
                if local_value not in (central, 0xFFFFFFFF):
                    raise CheckpointError(
                        f"{where}: zip entry {name!r} disagrees with its local header (sizes)"
                    )
        data_start = info.header_offset + 30 + n_name + n_extra
        if data_start + info.compress_size > cd_offset:
            raise CheckpointError(
                f"{where}: zip entry {name!r} declares {info.compress_size} bytes, more than "
                "the archive holds"
            )
        if info.compress_type == zipfile.ZIP_STORED:
            if info.file_size != info.compress_size:
                raise CheckpointError(f"{where}: stored zip entry {name!r} has two sizes")
        elif info.file_size > max(1, info.compress_size) * limits.MAX_DEFLATE_RATIO:
            raise CheckpointError(
                f"{where}: zip entry {name!r} claims to inflate {info.compress_size} bytes "
                f"to {info.file_size} (more than deflate can produce: a zip bomb or a lie)"
            )
        return ZipEntry(
            name, data_start, info.file_size, info.compress_size, info.compress_type, info.CRC
        )

    # ----- reading
    def get(self, name: str) -> ZipEntry | None:
        return self.entries.get(name)

    def read(self, entry: ZipEntry, max_bytes: int, what: str = "entry") -> bytes:
        """The whole (inflated) content of ``entry``, at most ``max_bytes``; CRC checked."""
        where = self.source.display
        if entry.size > max_bytes:
            raise CheckpointError(
                f"{where}: {what} {entry.name!r} is {entry.size} bytes, more than the limit of "
                f"{max_bytes}"
            )
        raw = self.source.pread(entry.data_start, entry.compressed_size)
        if entry.stored:
            data = raw
        else:
            inflater = zlib.decompressobj(-15)
            try:
                data = inflater.decompress(raw, entry.size + 1)
            except zlib.error as exc:
                raise CheckpointError(
                    f"{where}: zip entry {entry.name!r} is corrupt ({exc})"
                ) from None
            if len(data) != entry.size or not inflater.eof:
                raise CheckpointError(
                    f"{where}: zip entry {entry.name!r} does not inflate to its declared "
                    f"{entry.size} bytes"
                )
        if zlib.crc32(data) != entry.crc:
            raise CheckpointError(f"{where}: zip entry {entry.name!r} fails its CRC check")
        return data
