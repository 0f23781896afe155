"""Receive times of QoS 1 messages, kept so that a redelivered message gets the same one.

A reading without a device ``ts`` is stored at the time the gateway received it. If the gateway
dies after a batch's points are spooled but before the broker has its PUBACKs, the broker
delivers those messages again, and a second receive time would store a second point. MQTT 5
(4.4) requires the resend of an unacknowledged QoS 1 PUBLISH of a resumed session to carry its
original packet identifier and the DUP flag. So each sealed batch is noted here — receive
time, and per message its packet id and a fingerprint (Adler-32 of topic and payload) — and the
notes are written and fsynced by :meth:`Receipts.flush`, which the persister's spool stage
calls before it appends points to the spool: a point is never durable before its receipt.
A DUP delivery whose packet id and fingerprint match a note gets that note's receive time
again, so the point it makes is the same point (InfluxDB keeps one per series and time).

Why the last Receive Maximum messages are enough: the broker may have at most that many
unacknowledged messages for us, and we acknowledge in order, so what it resends after a
crash is the tail of what it sent; the part of it we had received is the tail of what we
received. Within that tail packet ids are distinct; an id noted for another message would
also need the same topic and payload to match.

Bounded: ``keep`` messages (the Receive Maximum) in memory, 14 bytes each, and on disk, 6
bytes each plus 29 per batch; the file is rewritten once it holds four times that. A new
session (the broker had none for us) forgets every note: no resend will come.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import sys
import threading
import zlib
from array import array
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

_FRAME = struct.Struct("<II")  # body length, CRC-32 of the body
_BATCH = struct.Struct("<BqII")  # kind, receive time (ns), messages, times kept from before
_FIXED = struct.Struct("<Iq")  # message index, receive time
_COUNT = struct.Struct("<BI")  # kind, messages (a compacted record: times written out)
_KIND_BATCH, _KIND_RESET, _KIND_COMPACT = 1, 2, 3
_LITTLE = sys.byteorder == "little"


def fingerprint(topic: bytes, payload: bytes) -> int:
    """Adler-32 of topic then payload: tells a redelivery from another message of the same id.

    A check on top of the packet id, not a digest; Adler-32 costs a third of zlib's CRC-32
    here (~50 against ~170 ns for a 100-byte payload)."""
    return zlib.adler32(payload, zlib.adler32(topic))


@dataclass(slots=True)
class _Note:
    """A sealed batch not yet fingerprinted: its messages are still at hand."""

    recv_ns: int
    mids: list[int]  # one per message (0: QoS 0, never redelivered)
    topics: list[bytes]
    payloads: list[bytes]
    fixed: dict[int, int]  # index -> receive time kept from an earlier delivery


def _le(values: array[int]) -> bytes:
    if _LITTLE:
        return values.tobytes()
    copy = array(values.typecode, values)
    copy.byteswap()
    return copy.tobytes()


def _from_le(typecode: str, data: bytes) -> array[int]:
    values = array(typecode, data)
    if not _LITTLE:
        values.byteswap()
    return values


def _frame(body: bytes) -> bytes:
    return _FRAME.pack(len(body), zlib.crc32(body)) + body


_RESET = _frame(bytes([_KIND_RESET]))


class Receipts:
    """Notes of receive times (see module docstring).

    ``note``, ``receive_time`` and ``session_lost`` run on the event loop, ``flush`` on the
    persister's spool thread; a lock guards what they share, taken once per batch or per
    redelivered message, never per message of a live stream.
    """

    def __init__(
        self, path: Path | None, step_ns: int, keep: int = 65_535, fsync: bool = True
    ) -> None:
        self.path = path
        self.step_ns = step_ns
        self.keep = keep
        self.fsync = fsync
        self._lock = threading.Lock()
        self._pending: list[_Note | None] = []  # noted, not yet written; None: a reset
        # Fingerprinted notes, one entry per message, oldest first.
        self._mids = array("H")
        self._fps = array("I")
        self._times = array("q")
        self._index: dict[int, int] | None = None  # packet id -> its latest entry
        self._file_bytes = 0
        self.hits = 0
        if path is not None:
            self._load(path)

    # -- event loop side ---------------------------------------------------------------
    def note(
        self,
        recv_ns: int,
        mids: list[int],
        topics: list[bytes],
        payloads: list[bytes],
        fixed: dict[int, int],
    ) -> None:
        """Note a sealed batch (``mids`` aligned with its messages, 0 for QoS 0)."""
        with self._lock:
            self._pending.append(_Note(recv_ns, mids, topics, payloads, fixed))

    def receive_time(self, mid: int, topic: bytes, payload: bytes) -> int | None:
        """The receive time noted for this message under packet id ``mid``, if any."""
        with self._lock:
            found, final = self._in_pending(mid, topic, payload)
            if not final:
                found = self._in_entries(mid, topic, payload)
        if found is not None:
            self.hits += 1
        return found

    def _in_pending(self, mid: int, topic: bytes, payload: bytes) -> tuple[int | None, bool]:
        """(receive time or None, whether older notes must not be consulted)."""
        for note in reversed(self._pending):  # newest first: the latest use of an id wins
            if note is None:
                return None, True  # a reset: nothing older counts
            try:
                i = note.mids.index(mid)
            except ValueError:
                continue
            if note.topics[i] == topic and note.payloads[i] == payload:
                return note.fixed.get(i, note.recv_ns + i * self.step_ns), True
            return None, True
        return None, False

    def _in_entries(self, mid: int, topic: bytes, payload: bytes) -> int | None:
        if self._index is None:
            self._index = dict(zip(self._mids, range(len(self._mids)), strict=True))
        position = self._index.get(mid)
        if position is None or self._fps[position] != fingerprint(topic, payload):
            return None
        return self._times[position]

    def session_lost(self) -> None:
        """The broker has no session for us: no resend will come, packet ids start afresh."""
        with self._lock:
            self._pending.append(None)

    # -- persist thread side -------------------------------------------------------------
    def flush(self) -> None:
        """Write every note taken so far and fsync; on OSError they stay pending (retried)."""
        with self._lock:
            pending = self._pending
            if not pending:
                return
            self._pending = []
        try:
            encoded = [self._encode(note) for note in pending]
            if self.path is not None:
                self._append(self.path, b"".join(record for record, _ in encoded))
        except BaseException:
            with self._lock:
                self._pending[:0] = pending
            raise
        self._absorb(pending, [fps for _, fps in encoded])
        if self.path is not None and self._file_bytes > 4 * self._compact_size() + 65_536:
            self._rewrite(self.path)

    def _times_of(self, note: _Note) -> array[int]:
        times = array("q", range(note.recv_ns, note.recv_ns + len(note.mids) * self.step_ns,
                                 self.step_ns))  # fmt: skip
        for index, ts in note.fixed.items():
            times[index] = ts
        return times

    def _encode(self, note: _Note | None) -> tuple[bytes, array[int]]:
        """A note's record for the file, and its fingerprints."""
        fps = array("I")
        if note is None:
            return _RESET, fps
        fps.extend(map(fingerprint, note.topics, note.payloads))
        body = _BATCH.pack(_KIND_BATCH, note.recv_ns, len(note.mids), len(note.fixed))
        body += _le(array("H", note.mids)) + _le(fps)
        body += b"".join(_FIXED.pack(index, ts) for index, ts in note.fixed.items())
        return _frame(body), fps

    def _absorb(self, pending: list[_Note | None], fps: list[array[int]]) -> None:
        """Move written notes into the entry arrays."""
        with self._lock:
            for note, note_fps in zip(pending, fps, strict=True):
                if note is None:
                    self._clear()
                    continue
                self._mids.extend(note.mids)
                self._fps.extend(note_fps)
                self._times.extend(self._times_of(note))
            excess = len(self._mids) - self.keep
            if excess > 0:
                del self._mids[:excess], self._fps[:excess], self._times[:excess]
            self._index = None

    def _clear(self) -> None:
        self._mids, self._fps, self._times = array("H"), array("I"), array("q")

    def _compact_size(self) -> int:
        return _FRAME.size + _COUNT.size + 14 * len(self._mids)

    def _append(self, path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            size = os.fstat(fd).st_size
            try:
                _write_all(fd, data)
                if self.fsync:
                    os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):  # a torn tail would hide later notes
                    os.ftruncate(fd, size)
                raise
        finally:
            os.close(fd)
        self._file_bytes = size + len(data)

    def _rewrite(self, path: Path) -> None:
        """Replace the file by the entries still kept (written aside, fsynced, renamed)."""
        with self._lock:
            body = _COUNT.pack(_KIND_COMPACT, len(self._mids))
            body += _le(self._mids) + _le(self._fps) + _le(self._times)
        data = _frame(body)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            _write_all(fd, data)
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        if self.fsync:
            _fsync_dir(path.parent)
        self._file_bytes = len(data)

    # -- start-up ------------------------------------------------------------------------
    def _load(self, path: Path) -> None:
        """Read the entries back; a torn or corrupt tail (crash mid-write) is cut off."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return
        pos = 0
        while pos + _FRAME.size <= len(data):
            length, crc = _FRAME.unpack_from(data, pos)
            body = data[pos + _FRAME.size : pos + _FRAME.size + length]
            if len(body) < length or zlib.crc32(body) != crc or not self._load_record(body):
                break
            pos += _FRAME.size + length
        if pos < len(data):
            log.warning("receipts %s: cutting off %d torn bytes", path, len(data) - pos)
            os.truncate(path, pos)
        self._file_bytes = pos
        excess = len(self._mids) - self.keep
        if excess > 0:
            del self._mids[:excess], self._fps[:excess], self._times[:excess]

    def _load_record(self, body: bytes) -> bool:
        """Apply one record; False if it does not parse (treated as the torn tail)."""
        kind = body[0] if body else 0
        if kind == _KIND_RESET and len(body) == 1:
            self._clear()
            return True
        if kind == _KIND_COMPACT and len(body) >= _COUNT.size:
            (_, n), pos = _COUNT.unpack_from(body, 0), _COUNT.size
            if len(body) != pos + 14 * n:
                return False
            self._clear()
            self._mids.extend(_from_le("H", body[pos : pos + 2 * n]))
            self._fps.extend(_from_le("I", body[pos + 2 * n : pos + 6 * n]))
            self._times.extend(_from_le("q", body[pos + 6 * n :]))
            return True
        if kind != _KIND_BATCH or len(body) < _BATCH.size:
            return False
        _, recv_ns, n, n_fixed = _BATCH.unpack_from(body, 0)
        pos = _BATCH.size + 6 * n
        if len(body) != pos + _FIXED.size * n_fixed:
            return False
        fixed = dict(_FIXED.unpack_from(body, pos + _FIXED.size * k) for k in range(n_fixed))
        mids = _from_le("H", body[_BATCH.size : _BATCH.size + 2 * n])
        self._mids.extend(mids)
        self._fps.extend(_from_le("I", body[_BATCH.size + 2 * n : pos]))
        self._times.extend(self._times_of(_Note(recv_ns, list(mids), [], [], fixed)))
        return True


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data``; a short write is continued, never taken as done."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(f"write returned {written}")
        view = view[written:]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
