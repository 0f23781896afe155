"""Durable on-disk spool between the pipeline and InfluxDB.

Every batch of line protocol is appended (and fsynced) here before its MQTT messages are
acknowledged; a writer thread drains the spool to InfluxDB in order and advances a cursor.
So an acknowledgement always means "stored or spooled", InfluxDB outages only make the spool
grow, and a restart replays whatever the cursor had not passed.

Layout: ``seg-<n>.spool`` files of records ``[u32 length][u32 crc32][data]`` and a
``cursor`` file of two fixed slots rewritten in place (:mod:`gateway.storage.spool_files`).

Faults: an append is all or nothing. Every write's length and error is checked; on a short
write, ENOSPC, EIO or a failed fsync the segment is cut back to its last good size and the
append raises :class:`SpoolWriteError`, so nothing of it counts as durable and the caller
does not acknowledge. While the segment cannot be cut back, appends go to a new segment or
are refused. At open, and whenever the drainer meets bytes that are not a valid record, the
spool resynchronises on the next valid header and checksum: the bad bytes are kept in
``quarantine/`` and counted, every good record after them is kept. Moving the cursor needs
no new disk blocks, and draining deletes segments, so a full disk recovers by draining.

Overflow policy: when the spool holds ``max_bytes``, ``append`` blocks, so the gateway stops
acknowledging and the broker keeps the backlog in the persistent session; nothing is dropped
by the spool.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from gateway.storage.spool_files import (
    HEADER,
    CursorFile,
    FileOps,
    fsync_dir,
    next_valid,
    quarantine,
    record_at,
    write_all,
)

log = logging.getLogger(__name__)

_APPEND_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND


class SpoolFullError(TimeoutError):
    """The spool stayed full for the whole wait."""


class SpoolWriteError(OSError):
    """An append did not become durable; nothing of it was kept."""


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
        ops: FileOps | None = None,
    ) -> None:
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self.ops = ops or FileOps()
        self._cond = threading.Condition()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.appended_records = 0
        self.full_waits = 0
        self.append_errors = 0
        self.cursor_errors = 0
        self.quarantined_bytes = 0
        self.quarantined_regions = 0
        #: Why the last append failed ("" once one succeeds), and why the cursor could not
        #: be written ("" once it could).
        self.append_error = ""
        self.cursor_error = ""
        self._sizes: dict[int, int] = {}
        for path in sorted(self.dir.glob("seg-*.spool")):
            self._sizes[int(path.stem[4:])] = path.stat().st_size
        # Bad regions met so far: segment -> {start: offset of the next valid record}.
        self._skips: dict[int, dict[int, int]] = {}
        self._cursor_file = CursorFile(self.dir / "cursor", self.ops)
        self._cursor = self._load_cursor()
        self._recover_last()
        if not self._sizes:
            self._sizes[1] = 0
        self._active = max(self._sizes)
        self._fd = self.ops.open(self._path(self._active), _APPEND_FLAGS)
        # While set, the active segment holds bytes of a failed append beyond this size.
        self._restore_to: int | None = None

    def _path(self, segment: int) -> Path:
        return self.dir / _seg_name(segment)

    def _load_cursor(self) -> tuple[int, int]:
        """The saved position; a missing or stale one starts at the oldest segment (the
        drainer then resends points InfluxDB has, which is harmless)."""
        cursor = self._cursor_file.load()
        if cursor is None or cursor[0] not in self._sizes:
            return (min(self._sizes, default=1), 0)
        return cursor[0], min(cursor[1], self._sizes[cursor[0]])

    def _recover_last(self) -> None:
        """Scan the last segment (the only one written when we stopped): quarantine bad
        regions, keep every valid record after them, cut what is left of a torn write."""
        if not self._sizes:
            return
        last = max(self._sizes)
        data = self._path(last).read_bytes()
        pos = good_end = self._cursor[1] if self._cursor[0] == last else 0
        while pos < len(data):
            end = record_at(data, pos)
            if end is not None:
                pos = good_end = end
                continue
            found = next_valid(data, pos + 1)
            if found is None:
                break
            self._note_bad(last, pos, found, data[pos:found])
            pos = good_end = found
        if good_end < len(data):
            log.warning(
                "spool segment %d: %d bytes of an unfinished write at offset %d quarantined "
                "and cut",
                last,
                len(data) - good_end,
                good_end,
            )
            self._keep_bad(last, good_end, data[good_end:])
            with self._path(last).open("r+b") as handle:
                handle.truncate(good_end)
            self._sizes[last] = good_end

    def _note_bad(self, segment: int, start: int, end: int, data: bytes) -> None:
        log.error(
            "spool segment %d: %d unreadable bytes at offset %d quarantined; reading goes on "
            "at the next valid record",
            segment,
            end - start,
            start,
        )
        self._skips.setdefault(segment, {})[start] = end
        self._keep_bad(segment, start, data)

    def _keep_bad(self, segment: int, start: int, data: bytes) -> None:
        self.quarantined_regions += 1
        self.quarantined_bytes += len(data)
        quarantine(self.dir, segment, start, data)

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
        """Append records with one write and one fsync (group commit): all of them durably,
        or none (SpoolWriteError, the segment cut back to where it was)."""
        items = [item for item in items if item]
        if not items:
            return
        record = b"".join(HEADER.pack(len(d), zlib.crc32(d)) + d for d in items)
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._depth_locked() + len(record) > self.max_bytes and self._depth_locked():
                self.full_waits += 1
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SpoolFullError(f"spool full ({self.max_bytes} bytes) for {timeout} s")
                self._cond.wait(remaining)
            self._ensure_writable()
            if self._sizes[self._active] >= self.segment_bytes:
                self._roll()
            good = self._sizes[self._active]
            try:
                write_all(self.ops, self._fd, record)
                if self.fsync:
                    self.ops.fsync(self._fd)
            except OSError as err:
                self._append_failed(good, len(record), err)
            self._sizes[self._active] = good + len(record)
            self.appended_records += len(items)
            self.append_error = ""
            self._cond.notify_all()

    def _append_failed(self, good: int, size: int, err: OSError) -> None:
        """Cut the segment back to ``good`` (after a failed fsync the written bytes cannot
        be trusted either) and raise."""
        self.append_errors += 1
        self.append_error = f"append failed: {err}"
        try:
            self.ops.ftruncate(self._fd, good)
        except OSError as cut_err:
            self._restore_to = good
            log.error("spool segment %d: cannot cut back to %d: %s", self._active, good, cut_err)
        code = err.errno or errno.EIO
        raise SpoolWriteError(
            code, f"spool append of {size} bytes failed, none kept: {err}"
        ) from err

    def _ensure_writable(self) -> None:
        """Refuse to append after bytes we cannot remove, unless a new segment can be used."""
        if self._restore_to is None:
            return
        try:
            self.ops.ftruncate(self._fd, self._restore_to)
            if self.ops.size(self._fd) != self._restore_to:
                raise OSError(errno.EIO, "segment size differs after the cut")
            self._restore_to = None
        except OSError as err:
            # The bytes past the good size are never read (reads stop at _sizes), so a
            # fresh segment makes the spool writable again.
            if not self._roll():
                self.append_error = f"segment {self._active} cannot be restored: {err}"
                raise SpoolWriteError(err.errno or errno.EIO, self.append_error) from err

    def _roll(self) -> bool:
        """Continue in a new segment; on failure stay in the current one (False)."""
        number = self._active + 1
        try:
            fd = self.ops.open(self._path(number), _APPEND_FLAGS)
        except OSError as err:
            log.warning("spool: cannot start segment %d (%s); staying in the last", number, err)
            return False
        if self.fsync:
            try:
                fsync_dir(self.dir)  # the new file's name must survive a power cut
            except OSError as err:
                log.warning("spool: fsync of %s failed: %s", self.dir, err)
        with contextlib.suppress(OSError):
            self.ops.close(self._fd)
        self._fd, self._active, self._restore_to = fd, number, None
        self._sizes[number] = 0
        return True

    # -- consumer side -----------------------------------------------------------------
    def wait_for_data(self, timeout: float) -> bool:
        """Block until something is spooled or ``timeout`` passes."""
        with self._cond:
            if self._depth_locked() == 0:
                self._cond.wait(timeout)
            return self._depth_locked() > 0

    def read(self, max_bytes: int, after: Chunk | None = None) -> Chunk | None:
        """Records from the cursor on, or from the end of ``after`` (a chunk read but not
        yet committed): one segment at most, about ``max_bytes`` of data. A chunk without
        records steps over bytes that are no record (quarantined)."""
        with self._cond:
            seg, off = self._cursor if after is None else (after.segment, after.end_offset)
            while seg in self._sizes and off >= self._sizes[seg] and seg < self._active:
                seg, off = seg + 1, 0
            if seg not in self._sizes or off >= self._sizes[seg]:
                return None
            skips = self._skips.get(seg, {})
            if off in skips:
                return Chunk(seg, skips[off], [])
            end = min([start for start in skips if start > off] + [self._sizes[seg]])
        data = self._read_range(seg, off, min(end, off + max(max_bytes, 1) + (4 << 20)))
        records: list[bytes] = []
        pos = total = 0
        while pos < len(data) and (total < max_bytes or not records):
            stop = record_at(data, pos)
            if stop is None:
                break
            records.append(data[pos + HEADER.size : stop])
            total += stop - pos - HEADER.size
            pos = stop
        if records:
            return Chunk(seg, off + pos, records)
        return self._read_slow(seg, off, end)

    def _read_slow(self, seg: int, off: int, end: int) -> Chunk:
        """No whole record fitted the window: one big record, or bytes that are none."""
        data = self._read_range(seg, off, end)
        stop = record_at(data, 0)
        if stop is not None:
            return Chunk(seg, off + stop, [data[HEADER.size : stop]])
        found = next_valid(data, 1)
        bad_end = end if found is None else off + found
        with self._cond:
            if seg in self._sizes:
                self._note_bad(seg, off, bad_end, data[: bad_end - off])
        return Chunk(seg, bad_end, [])

    def _read_range(self, seg: int, start: int, end: int) -> bytes:
        with self._path(seg).open("rb") as handle:
            handle.seek(start)
            return handle.read(end - start)

    def commit(self, chunk: Chunk) -> None:
        """Mark a chunk as stored: advance the cursor, delete drained segments.

        A cursor that cannot be written (disk full) is kept in memory and written at the
        next commit; draining goes on, and it frees the disk."""
        with self._cond:
            seg, off = chunk.segment, chunk.end_offset
            if off >= self._sizes[seg] and seg < self._active:
                seg, off = seg + 1, 0
            elif seg == self._active and off >= self._sizes[seg] and self._recycle_active():
                seg, off = self._active, 0
            self._cursor = (seg, off)
            try:
                self._cursor_file.store(seg, off)
                self.cursor_error = ""
            except OSError as err:
                self.cursor_errors += 1
                if not self.cursor_error:
                    log.error("spool cursor not written (kept in memory, retried): %s", err)
                self.cursor_error = f"cursor not written: {err}"
            for number in [n for n in self._sizes if n < seg]:
                self._drop(number)
            self._cond.notify_all()

    def _recycle_active(self) -> bool:
        """Everything is drained: start a new segment so the old one can be deleted, when
        that frees much (a quarter segment) or an append failed (the disk may be full)."""
        size = self._sizes[self._active]
        if size == 0 or (size < self.segment_bytes // 4 and not self.append_error):
            return False
        return self._roll()

    def _drop(self, number: int) -> None:
        del self._sizes[number]
        self._skips.pop(number, None)
        try:
            self._path(number).unlink()
        except FileNotFoundError:
            pass
        except OSError as err:
            log.error("spool: cannot delete drained segment %d: %s", number, err)

    def close(self, timeout: float = 5.0) -> None:
        """Close the active segment and the cursor file (given up after ``timeout`` if
        another thread holds the spool, e.g. in an fsync on a hung disk)."""
        if not self._cond.acquire(timeout=timeout):
            log.warning("spool busy for %.1f s; not closed", timeout)
            return
        try:
            with contextlib.suppress(OSError):
                self.ops.close(self._fd)
            self._cursor_file.close()
        finally:
            self._cond.release()
