"""Spool under file-system faults: short writes, ENOSPC, EIO on fsync, a cursor that cannot
be written, bytes that are no record. An append is all or nothing; recovery never drops a
good record after a bad region."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from gateway.storage.spool import Spool, SpoolWriteError
from gateway.storage.spool_files import HEADER, FileOps, load_cursor

from .faulty_files import FaultyOps


def drain(spool: Spool) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(10_000):
        chunk = spool.read(1 << 20)
        if chunk is None:
            return out
        out += chunk.records
        spool.commit(chunk)
    raise AssertionError("spool never emptied")


def segment_sizes(directory: Path) -> list[int]:
    return [p.stat().st_size for p in sorted(directory.glob("seg-*.spool"))]


def rec(i: int) -> bytes:
    return f"smoke,device_id=d{i} seq={i}i {i}".encode()


@pytest.mark.parametrize(
    ("fault", "value"),
    [
        ("short_writes", 5),  # a few bytes, then ENOSPC
        ("short_writes", 30),  # past the first record of the group, then ENOSPC
        ("write_error", errno.ENOSPC),
        ("write_error", errno.EIO),
        ("fsync_error", errno.EIO),  # written but not durable: must not count either
        ("fsync_error", errno.ENOSPC),
    ],
)
def test_a_failed_append_keeps_nothing_and_the_next_one_works(
    tmp_path: Path, fault: str, value: int
) -> None:
    ops = FaultyOps()
    spool = Spool(tmp_path, ops=ops)
    spool.append_many([rec(0), rec(1)])
    size_before = segment_sizes(tmp_path)
    setattr(ops, fault, value)
    with pytest.raises(SpoolWriteError) as caught:
        spool.append_many([rec(2), rec(3)])
    assert caught.value.errno in (errno.ENOSPC, errno.EIO)
    assert segment_sizes(tmp_path) == size_before, "the failed append left bytes behind"
    assert spool.append_errors == 1 and "append failed" in spool.append_error
    ops.heal()
    spool.append_many([rec(4)])
    assert spool.append_error == ""
    spool.close()
    reopened = Spool(tmp_path)
    assert drain(reopened) == [rec(0), rec(1), rec(4)]
    assert reopened.quarantined_bytes == 0


def test_a_short_write_that_goes_on_is_completed(tmp_path: Path) -> None:
    class Dribble(FileOps):
        def write(self, fd: int, data: bytes | memoryview) -> int:
            return os.write(fd, bytes(data[:7]))  # never more than 7 bytes a call

    spool = Spool(tmp_path, ops=Dribble())
    spool.append_many([rec(i) for i in range(5)])
    spool.close()
    assert drain(Spool(tmp_path)) == [rec(i) for i in range(5)]


def test_bytes_that_cannot_be_cut_back_are_never_appended_after(tmp_path: Path) -> None:
    ops = FaultyOps()
    spool = Spool(tmp_path, ops=ops)
    spool.append(rec(0))
    ops.short_writes, ops.truncate_error = 20, errno.EIO
    with pytest.raises(SpoolWriteError):
        spool.append(rec(1))
    # The next append cannot cut the torn bytes either: it continues in a new segment.
    ops.heal()
    ops.truncate_error = errno.EIO
    spool.append(rec(2))
    assert len(segment_sizes(tmp_path)) == 2
    ops.heal()
    assert drain(spool) == [rec(0), rec(2)]
    spool.close()


def test_appends_are_refused_while_the_segment_cannot_be_restored(tmp_path: Path) -> None:
    ops = FaultyOps()
    spool = Spool(tmp_path, ops=ops)
    spool.append(rec(0))
    ops.short_writes, ops.truncate_error = 20, errno.EIO
    with pytest.raises(SpoolWriteError):
        spool.append(rec(1))
    ops.heal()
    ops.truncate_error, ops.open_error = errno.EIO, errno.ENOSPC  # no cut, no new segment
    writes = ops.calls.count("write")
    with pytest.raises(SpoolWriteError, match="cannot be restored"):
        spool.append(rec(2))
    assert ops.calls.count("write") == writes, "wrote after bytes it could not remove"
    ops.heal()
    spool.append(rec(3))  # the cut works again
    spool.close()
    reopened = Spool(tmp_path)
    assert drain(reopened) == [rec(0), rec(3)]


def test_restart_after_torn_bytes_in_an_old_segment_keeps_every_good_record(
    tmp_path: Path,
) -> None:
    ops = FaultyOps()
    spool = Spool(tmp_path, ops=ops)
    spool.append(rec(0))
    ops.short_writes, ops.truncate_error = 20, errno.EIO
    with pytest.raises(SpoolWriteError):
        spool.append(rec(1))
    ops.heal()
    ops.truncate_error = errno.EIO
    spool.append(rec(2))  # into a new segment; the torn bytes stay in the first
    spool.close()
    reopened = Spool(tmp_path)
    assert drain(reopened) == [rec(0), rec(2)]
    assert reopened.quarantined_bytes == 20
    assert len(list((tmp_path / "quarantine").iterdir())) == 1


def test_drainer_cursor_on_a_full_disk_keeps_draining_and_frees_segments(tmp_path: Path) -> None:
    ops = FaultyOps()
    spool = Spool(tmp_path, segment_bytes=200, ops=ops)
    for i in range(40):
        spool.append(rec(i))
    assert len(segment_sizes(tmp_path)) > 3
    ops.pwrite_error = errno.ENOSPC
    (tmp_path / "cursor").unlink(missing_ok=True)
    ops.open_error = errno.ENOSPC  # nor can a cursor file be created
    got = drain(spool)
    assert got == [rec(i) for i in range(40)]
    assert spool.cursor_errors > 0 and "cursor not written" in spool.cursor_error
    assert len(segment_sizes(tmp_path)) == 1, "drained segments must be deleted"
    ops.heal()
    spool.append(rec(40))
    assert drain(spool) == [rec(40)]
    assert spool.cursor_error == ""
    spool.close()
    assert drain(Spool(tmp_path)) == []


def test_a_lost_cursor_resends_rather_than_skips(tmp_path: Path) -> None:
    ops = FaultyOps()
    spool = Spool(tmp_path, ops=ops)
    for i in range(5):
        spool.append(rec(i))
    chunk = spool.read(1)
    assert chunk is not None
    spool.commit(chunk)  # cursor written after rec(0)
    ops.pwrite_error = errno.EIO
    chunk = spool.read(1)
    assert chunk is not None
    spool.commit(chunk)  # this one is not written
    spool.close()
    assert drain(Spool(tmp_path)) == [rec(i) for i in range(1, 5)]


def test_fully_drained_after_a_failed_append_the_active_segment_is_freed(tmp_path: Path) -> None:
    ops = FaultyOps()
    spool = Spool(tmp_path, ops=ops)  # one big segment: nothing rolls by size
    for i in range(20):
        spool.append(rec(i))
    ops.write_error = errno.ENOSPC
    with pytest.raises(SpoolWriteError):
        spool.append(rec(99))
    ops.heal()
    assert drain(spool) == [rec(i) for i in range(20)]
    assert segment_sizes(tmp_path) == [0], "the drained segment still holds the disk"
    spool.append(rec(20))
    spool.close()
    assert drain(Spool(tmp_path)) == [rec(20)]


def _frame(data: bytes) -> bytes:
    import zlib

    return HEADER.pack(len(data), zlib.crc32(data)) + data


@pytest.mark.parametrize(
    "garbage",
    [
        _frame(b"smoke,device_id=torn seq=1i 1")[:17],  # a torn record (the case)
        b"\x00" * 64,  # zero-filled blocks after a crash
        HEADER.pack(40, 0) + b"smoke,device_id=x seq=1i",  # a header whose length lies
    ],
)
@pytest.mark.parametrize("in_last_segment", [True, False])
def test_bad_bytes_between_good_records_are_quarantined_not_the_records_after(
    tmp_path: Path, garbage: bytes, in_last_segment: bool
) -> None:
    before = [rec(i) for i in range(3)]
    after = [rec(i) for i in range(3, 9)]
    segment = tmp_path / "seg-000000000001.spool"
    segment.write_bytes(b"".join(map(_frame, before)) + garbage + b"".join(map(_frame, after)))
    if not in_last_segment:
        (tmp_path / "seg-000000000002.spool").write_bytes(_frame(rec(9)))
    spool = Spool(tmp_path)
    expected = before + after + ([] if in_last_segment else [rec(9)])
    assert drain(spool) == expected
    assert spool.quarantined_bytes == len(garbage)
    [kept] = list((tmp_path / "quarantine").iterdir())
    assert kept.read_bytes() == garbage
    spool.append(rec(10))
    assert drain(spool) == [rec(10)]


def test_a_torn_tail_is_quarantined_and_cut(tmp_path: Path) -> None:
    segment = tmp_path / "seg-000000000001.spool"
    torn = _frame(rec(7))[:-3]
    segment.write_bytes(_frame(rec(1)) + torn)
    spool = Spool(tmp_path)
    assert segment.stat().st_size == len(_frame(rec(1)))
    assert spool.quarantined_bytes == len(torn)
    spool.append(rec(2))
    assert drain(spool) == [rec(1), rec(2)]


def test_a_cursor_of_earlier_versions_is_read(tmp_path: Path) -> None:
    first = Spool(tmp_path)
    for i in range(4):
        first.append(rec(i))
    first.close()
    (tmp_path / "cursor").write_text(f"1 {2 * len(_frame(rec(0)))}\n")
    assert load_cursor(tmp_path) == (1, 2 * len(_frame(rec(0))))
    spool = Spool(tmp_path)
    assert drain(spool) == [rec(2), rec(3)]
    assert (tmp_path / "cursor").stat().st_size == 1024  # rewritten in the slot format
