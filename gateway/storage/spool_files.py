"""The spool's file layer: system calls, record scanning, the cursor file, quarantine.

Kept apart from :mod:`gateway.storage.spool` so the FIFO logic reads plainly and so tests can pass a
:class:`FileOps` that injects faults (short writes, ENOSPC, EIO on fsync) into every path.

Records are ``[u32 length][u32 crc32][data]`` with ``length > 0`` (an empty record is never
written, so a zero-filled region never passes for records).
"""

from __future__ import annotations

import errno
import logging
import os
import struct
import zlib
from pathlib import Path

log = logging.getLogger(__name__)

HEADER = struct.Struct("!II")


class FileOps:
    """The system calls the spool makes, one method each (tests override some)."""

    def open(self, path: Path, flags: int, mode: int = 0o640) -> int:
        """``os.open``."""
        return os.open(path, flags, mode)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        """``os.write``: may write fewer bytes than asked."""
        return os.write(fd, data)

    def pwrite(self, fd: int, data: bytes, offset: int) -> int:
        """``os.pwrite``."""
        return os.pwrite(fd, data, offset)

    def fsync(self, fd: int) -> None:
        """``os.fsync``."""
        os.fsync(fd)

    def ftruncate(self, fd: int, length: int) -> None:
        """``os.ftruncate``."""
        os.ftruncate(fd, length)

    def size(self, fd: int) -> int:
        """The file's size (``fstat``)."""
        return os.fstat(fd).st_size

    def close(self, fd: int) -> None:
        """``os.close``."""
        os.close(fd)


def write_all(ops: FileOps, fd: int, data: bytes) -> None:
    """Write all of ``data`` or raise OSError; a short write is continued, a write that
    makes no progress is an error (the disk is full)."""
    done = ops.write(fd, data)
    if done == len(data):
        return
    if done <= 0:
        raise OSError(errno.ENOSPC, "write made no progress")
    view = memoryview(data)
    while done < len(data):  # each pass writes at least one byte, so this ends
        written = ops.write(fd, view[done:])
        if written <= 0:
            raise OSError(errno.ENOSPC, f"write made no progress after {done} bytes")
        done += written


def fsync_dir(directory: Path) -> None:
    """Make a file created or removed in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- scanning records ----------------------------------------------------------------------


def record_at(data: bytes | memoryview, pos: int) -> int | None:
    """The end of the whole, checksum-valid record starting at ``pos``, or None."""
    if pos + HEADER.size > len(data):
        return None
    length, crc = HEADER.unpack_from(data, pos)
    end: int = pos + HEADER.size + length
    if length == 0 or end > len(data):
        return None
    if zlib.crc32(data[pos + HEADER.size : end]) != crc:
        return None
    return end


def next_valid(data: bytes | memoryview, start: int) -> int | None:
    """The first offset at or after ``start`` where a valid record begins (resync).

    Only offsets whose length field fits in ``data`` pay for a checksum; in line-protocol
    text (bytes >= 0x20) the length fields read as >= 512 MiB, so a scan over a torn
    record costs about one comparison per byte.
    """
    last = len(data) - HEADER.size
    unpack = HEADER.unpack_from
    for pos in range(start, last + 1):
        length, _ = unpack(data, pos)
        if 0 < length <= last - pos and record_at(data, pos) is not None:
            return pos
    return None


# -- the cursor ----------------------------------------------------------------------------

_SLOT = struct.Struct("!4sQQQI")
_MAGIC = b"SCC1"
_SLOT_BYTES = 512  # two slots in different sectors: a torn write spoils one at most
_FILE_BYTES = 2 * _SLOT_BYTES


class CursorFile:
    """``cursor``: two fixed-size slots ``[magic][seq][segment][offset][crc32]`` rewritten
    in place, alternately, so that moving the cursor needs no new disk blocks (it works on
    a full disk) and a torn write leaves the other slot. Not fsynced: a cursor lost in a
    crash only resends points InfluxDB already has, which is harmless."""

    def __init__(self, path: Path, ops: FileOps) -> None:
        self.path = path
        self.ops = ops
        self._fd: int | None = None
        self._seq = 0

    def load(self) -> tuple[int, int] | None:
        """The newest valid position, or None (no file, or nothing valid in it)."""
        try:
            data = self.path.read_bytes()
        except OSError:
            return None
        best: tuple[int, int, int] | None = None
        for base in (0, _SLOT_BYTES):
            slot = data[base : base + _SLOT.size]
            if len(slot) < _SLOT.size:
                continue
            magic, seq, segment, offset, crc = _SLOT.unpack(slot)
            if magic == _MAGIC and zlib.crc32(slot[:-4]) == crc and (best is None or seq > best[0]):
                best = (seq, segment, offset)
        if best is not None:
            self._seq = best[0]
            return best[1], best[2]
        return _legacy(data)

    def store(self, segment: int, offset: int) -> None:
        """Write the position into the older slot; OSError when that fails."""
        if self._fd is None:
            self._fd = self._create()
        self._seq += 1
        head = _SLOT.pack(_MAGIC, self._seq, segment, offset, 0)[:-4]
        slot = head + struct.pack("!I", zlib.crc32(head))
        written = self.ops.pwrite(self._fd, slot, (self._seq % 2) * _SLOT_BYTES)
        if written != len(slot):
            raise OSError(errno.EIO, f"cursor: short write ({written} of {len(slot)} bytes)")

    def _create(self) -> int:
        """Open the file, first making it full size (once; this needs disk blocks)."""
        if self.path.exists() and self.path.stat().st_size == _FILE_BYTES:
            return self.ops.open(self.path, os.O_RDWR)  # slots (a text cursor is never this long)
        tmp = self.path.with_name("cursor.tmp")
        current = self.load()
        fd = self.ops.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC)
        try:
            write_all(self.ops, fd, bytes(_FILE_BYTES))
            if current is not None:
                self._fd = fd
                self.store(*current)  # keep the position while the format changes
            self.ops.fsync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            self._fd = None
            self.ops.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return fd

    def close(self) -> None:
        """Close the file (reopened by the next ``store``)."""
        if self._fd is not None:
            self.ops.close(self._fd)
            self._fd = None


def _legacy(data: bytes) -> tuple[int, int] | None:
    """The text cursor of earlier versions: ``<segment> <offset>``."""
    try:
        segment, offset = data.decode("ascii").split()
        return int(segment), int(offset)
    except (UnicodeDecodeError, ValueError):
        return None


def load_cursor(directory: Path) -> tuple[int, int] | None:
    """A spool directory's cursor, read without opening the spool (tools and tests)."""
    return CursorFile(directory / "cursor", FileOps()).load()


# -- quarantine ----------------------------------------------------------------------------


def quarantine(directory: Path, segment: int, offset: int, data: bytes) -> None:
    """Keep unreadable bytes in ``quarantine/`` for inspection; a failure (disk full) is
    logged, the spool goes on without the copy."""
    target = directory / "quarantine" / f"seg-{segment:012d}-at-{offset}.bad"
    try:
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(data)
    except OSError as err:
        log.error("spool: could not keep %d unreadable bytes in %s: %s", len(data), target, err)
