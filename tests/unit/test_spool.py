"""Spool: order, durability across reopen, torn tails, bounds."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from gateway.storage.spool import Spool, SpoolFullError


def drain(spool: Spool) -> list[bytes]:
    out: list[bytes] = []
    for _ in range(10_000):
        chunk = spool.read(1 << 20)
        if chunk is None:
            return out
        out += chunk.records
        spool.commit(chunk)
    raise AssertionError("spool never emptied")


def test_records_come_back_in_order(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=100)
    records = [f"line {i}".encode() for i in range(50)]
    for record in records:
        spool.append(record)
    assert drain(spool) == records
    assert spool.depth_bytes() == 0
    # drained segments are deleted, only the active one stays
    assert len(list(tmp_path.glob("seg-*.spool"))) == 1


def test_uncommitted_records_survive_reopen(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=64)
    for i in range(20):
        spool.append(f"r{i}".encode())
    chunk = spool.read(10)
    assert chunk is not None
    spool.commit(chunk)
    first = chunk.records
    spool.close()
    reopened = Spool(tmp_path, segment_bytes=64)
    rest = drain(reopened)
    assert first + rest == [f"r{i}".encode() for i in range(20)]


def test_torn_tail_is_cut_and_appending_continues(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(b"complete")
    spool.close()
    segment = next(tmp_path.glob("seg-*.spool"))
    with segment.open("ab") as handle:
        handle.write(b"\x00\x00\x00\x10\x00\x00")  # header of a record that never finished
    reopened = Spool(tmp_path)
    reopened.append(b"after crash")
    assert drain(reopened) == [b"complete", b"after crash"]


@pytest.mark.parametrize("max_bytes", [64, 200])
def test_full_spool_blocks_then_raises(tmp_path: Path, max_bytes: int) -> None:
    spool = Spool(tmp_path, max_bytes=max_bytes)
    spool.append(b"x" * 40)
    while spool.depth_bytes() + 48 <= max_bytes:
        spool.append(b"x" * 40)
    with pytest.raises(SpoolFullError):
        spool.append(b"y" * 40, timeout=0.05)
    assert spool.full_waits > 0


def test_full_spool_resumes_when_drained(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=100)
    spool.append(b"a" * 60)
    done = threading.Event()

    def producer() -> None:
        spool.append(b"b" * 60, timeout=5)
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert not done.wait(0.1)
    chunk = spool.read(1000)
    assert chunk is not None
    spool.commit(chunk)
    thread.join(5)
    assert done.is_set()
    assert drain(spool) == [b"b" * 60]


def test_corrupt_record_in_the_middle_is_skipped_and_counted(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(b"good one")
    spool.append(b"second")
    spool.close()
    segment = next(tmp_path.glob("seg-*.spool"))
    data = bytearray(segment.read_bytes())
    data[9] ^= 0xFF  # flip a byte inside the first record's data
    segment.write_bytes(bytes(data))
    reopened = Spool(tmp_path)
    assert drain(reopened) == [b"second"]
    assert reopened.quarantined_regions == 1
