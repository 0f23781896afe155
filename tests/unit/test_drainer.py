"""Spool drainer: ordering, retry on outage, isolation of bad lines."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.storage.drainer import Drainer
from gateway.storage.influx import WriteError, classify
from gateway.storage.spool import Spool


class FakeWriter:
    """Stores bodies; fails the first ``outage`` calls; rejects lines containing b'BAD'."""

    def __init__(self, outage: int = 0) -> None:
        self.outage = outage
        self.lines: list[bytes] = []
        self.calls = 0

    def write(self, body: bytes) -> None:
        self.calls += 1
        if self.outage:
            self.outage -= 1
            raise WriteError("connection refused", retryable=True)
        if b"BAD" in body:
            raise WriteError("HTTP 400: unable to parse", retryable=False, status=400)
        self.lines += body.split(b"\n")

    def close(self) -> None:
        pass


def run_until_drained(drainer: Drainer, timeout: float = 10.0) -> None:
    drainer.start()
    deadline = time.monotonic() + timeout
    while not drainer.drained() and time.monotonic() < deadline:
        time.sleep(0.01)
    drainer.stop()
    assert drainer.drained()


def test_outage_is_retried_without_loss(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    for i in range(10):
        spool.append(f"m v={i}i".encode())
    writer = FakeWriter(outage=3)
    drainer = Drainer(
        spool, writer, lambda line, why: None, backoff_min_s=0.001, backoff_max_s=0.01
    )
    run_until_drained(drainer)
    assert writer.lines == [f"m v={i}i".encode() for i in range(10)]
    assert drainer.stats.retries == 3


def test_bad_lines_are_isolated(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(b"a v=1i\nBAD line\nb v=2i\nc v=3i")
    spool.append(b"d v=4i\nBAD again")
    rejected: list[bytes] = []
    writer = FakeWriter()
    drainer = Drainer(spool, writer, lambda line, why: rejected.append(line))
    run_until_drained(drainer)
    assert sorted(writer.lines) == [b"a v=1i", b"b v=2i", b"c v=3i", b"d v=4i"]
    assert rejected == [b"BAD line", b"BAD again"]
    assert drainer.stats.rejected_lines == 2


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (413, False), (401, True), (404, True), (429, True), (500, True), (503, True)],
)
def test_classify(status: int, retryable: bool) -> None:
    assert classify(status, "x").retryable is retryable


def test_parallel_connections_store_everything_once_committed(tmp_path: Path) -> None:
    spool = Spool(tmp_path, segment_bytes=200)
    for i in range(100):
        spool.append(f"m v={i}i".encode())
    writers: list[FakeWriter] = []

    def factory() -> FakeWriter:
        writers.append(FakeWriter(outage=1))
        return writers[-1]

    drainer = Drainer(
        spool,
        factory,
        lambda line, why: None,
        max_request_bytes=60,
        backoff_min_s=0.001,
        backoff_max_s=0.01,
        connections=3,
    )
    run_until_drained(drainer)
    assert len(writers) == 3
    stored = {line for writer in writers for line in writer.lines}
    assert stored == {f"m v={i}i".encode() for i in range(100)}
    assert spool.read(1 << 20) is None
