"""Durable on-disk spool between the pipeline and InfluxDB.

Every batch of line protocol is appended (and fsynced) here before its MQTT messages are
acknowledged; a writer thread drains the spool to InfluxDB in order and advances a cursor.
So an acknowledgement always means "stored or spooled", InfluxDB outages only make the spool
grow, and a restart replays whatever the cursor had not passed.

Layout: ``seg-<n>.spool`` files of records ``[u32 length][u32 crc32][data]`` and a
``cursor`` file ``<segment> <offset>``. A torn record at the end of the last segment (crash
mid-write) is cut off at open. Overflow policy: when the spool holds ``max_bytes``,
``append`` blocks, so the gateway stops acknowledging and the broker keeps the backlog in
the persistent session; nothing is dropped by the spool.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!II")


class SpoolFullError(TimeoutError):
    """The spool stayed full for the whole wait."""


@dataclass(frozen=True, slots=True)
class Chunk:
    """Consecutive records read from one segment, with the position after them."""

    segment: int
    end_offset: int
    records: list[bytes]


def _seg_name(number: int) -> str:
    return f"seg-{number:012d}.spool"


class Spool:
    """A bounded, crash-safe FIFO of byte records; see module docstring."""

    def __init__(
        self,
        directory: Path,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 16 << 20,
        fsync: bool = True,
    ) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._cond = threading.Condition()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[int, int] = {}
        for path in sorted(self.dir.glob("seg-*.spool")):
            self._sizes[int(path.stem[4:])] = path.stat().st_size
        self._cursor = self._load_cursor()
        self._recover_tail()
        if not self._sizes:
            self._sizes[1] = 0
        self._active = max(self._sizes)
        self._fd = os.open(self._path(self._active), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self.appended_records = 0
        self.full_waits = 0
        self.corrupt_records = 0

    def _path(self, segment: int) -> Path:
        return self.dir / _seg_name(segment)

    def _load_cursor(self) -> tuple[int, int]:
        try:
            seg_text, off_text = (self.dir / "cursor").read_text().split()
            cursor = (int(seg_text), int(off_text))
        except (OSError, ValueError):
            cursor = (min(self._sizes, default=1), 0)
        if cursor[0] not in self._sizes:
            cursor = (min(self._sizes, default=1), 0)
        return cursor

    def _recover_tail(self) -> None:
        """Cut a torn record off the last segment (the only one written when we crashed)."""
        if not self._sizes:
            return
        last = max(self._sizes)
        path = self._path(last)
        data = path.read_bytes()
        pos = 0
        while pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            end = pos + _HEADER.size + length
            body = data[pos + _HEADER.size : end]
            if len(body) != length or (zlib.crc32(body) != crc and end == len(data)):
                break  # a write that never finished: only the very last record can be torn
            pos = end
        if pos != len(data):
            log.warning("spool %s: cutting %d torn bytes at offset %d", path, len(data) - pos, pos)
            with path.open("r+b") as handle:
                handle.truncate(pos)
            self._sizes[last] = pos

    # -- producer side -----------------------------------------------------------------
    def depth_bytes(self) -> int:
        """Bytes not yet drained to InfluxDB."""
        with self._cond:
            return self._depth_locked()

    def _depth_locked(self) -> int:
        seg, off = self._cursor
        return sum(size for number, size in self._sizes.items() if number >= seg) - off

    def append(self, data: bytes, timeout: float = 5.0) -> None:
        """Append one record durably; block while the spool is full (SpoolFullError on timeout)."""
        self.append_many([data], timeout)

    def append_many(self, items: list[bytes], timeout: float = 5.0) -> None:
        """Append records with one write and one fsync (group commit)."""
        items = [item for item in items if item]
        if not items:
            return
        record = b"".join(_HEADER.pack(len(d), zlib.crc32(d)) + d for d in items)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._depth_locked() + len(record) > self.max_bytes and self._depth_locked():
                self.full_waits += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SpoolFullError(f"spool full ({self.max_bytes} bytes) for {timeout} s")
                self._cond.wait(remaining)
            if self._sizes[self._active] >= self.segment_bytes:
                self._roll()
            os.write(self._fd, record)
            if self.fsync:
                os.fsync(self._fd)
            self._sizes[self._active] += len(record)
            self.appended_records += len(items)
            self._cond.notify_all()

    def _roll(self) -> None:
        os.close(self._fd)
        self._active += 1
        self._sizes[self._active] = 0
        self._fd = os.open(self._path(self._active), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    # -- consumer side -----------------------------------------------------------------
    def wait_for_data(self, timeout: float) -> bool:
        """Block until something is spooled or ``timeout`` passes."""
        with self._cond:
            if self._depth_locked() == 0:
                self._cond.wait(timeout)
            return self._depth_locked() > 0

    def read(self, max_bytes: int, after: Chunk | None = None) -> Chunk | None:
        """Records from the cursor on, or from the end of ``after`` (a chunk read but not
        yet committed): one segment at most, about ``max_bytes`` of data."""
        with self._cond:
            seg, off = self._cursor if after is None else (after.segment, after.end_offset)
            while seg in self._sizes and off >= self._sizes[seg] and seg < self._active:
                seg, off = seg + 1, 0
            if seg not in self._sizes or off >= self._sizes[seg]:
                return None
            limit = self._sizes[seg]
        records: list[bytes] = []
        total = 0
        with self._path(seg).open("rb") as handle:
            handle.seek(off)
            data = handle.read(min(limit - off, max(max_bytes, 1) + (4 << 20)))
        pos = 0
        while pos + _HEADER.size <= len(data) and (total < max_bytes or not records):
            length, crc = _HEADER.unpack_from(data, pos)
            body = data[pos + _HEADER.size : pos + _HEADER.size + length]
            if len(body) != length:
                break
            if zlib.crc32(body) == crc:
                records.append(body)
            else:
                # Bit rot inside the file: skip this record, say so, keep the rest.
                self.corrupt_records += 1
                log.error(
                    "spool segment %d: record at offset %d fails its checksum; skipped",
                    seg,
                    off + pos,
                )
            total += length
            pos += _HEADER.size + length
        if pos == 0:
            return None
        return Chunk(seg, off + pos, records)

    def commit(self, chunk: Chunk) -> None:
        """Mark a chunk as stored: advance the cursor, delete drained segments."""
        with self._cond:
            self._cursor = (chunk.segment, chunk.end_offset)
            for number in [n for n in self._sizes if n < chunk.segment]:
                self._drop(number)
            if chunk.end_offset >= self._sizes[chunk.segment] and chunk.segment < self._active:
                self._drop(chunk.segment)
                self._cursor = (chunk.segment + 1, 0)
            tmp = self.dir / "cursor.tmp"
            tmp.write_text(f"{self._cursor[0]} {self._cursor[1]}\n")
            tmp.replace(self.dir / "cursor")
            self._cond.notify_all()

    def _drop(self, number: int) -> None:
        del self._sizes[number]
        with contextlib.suppress(FileNotFoundError):
            self._path(number).unlink()

    def close(self) -> None:
        """Close the active segment file."""
        with self._cond:
            os.close(self._fd)
