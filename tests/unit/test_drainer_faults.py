"""Drainer under faults: a cursor that cannot be written (full disk), a dead-letter store
that fails, an unexpected exception (restarted, visible), a hung write at stop."""

from __future__ import annotations

import errno
import threading
import time
from pathlib import Path

from gateway.core.supervise import SupervisedThread
from gateway.storage.drainer import Drainer
from gateway.storage.influx import WriteError
from gateway.storage.spool import Spool

from .faulty_files import FaultyOps


class Writer:
    """Stores lines; ``fail`` holds an exception raised by every write while set."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.fail: BaseException | None = None
        self.hang = threading.Event()

    def write(self, body: bytes) -> None:
        if self.hang.is_set():
            time.sleep(30)
        if self.fail is not None:
            raise self.fail
        if b"BAD" in body:
            raise WriteError("HTTP 400: unable to parse", retryable=False, status=400)
        self.lines += body.split(b"\n")

    def close(self) -> None:
        pass


def wait(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def fast(drainer: Drainer) -> Drainer:
    drainer.backoff_min_s, drainer.backoff_max_s = 0.001, 0.01
    drainer.thread = SupervisedThread(
        "influx-drainer", drainer._run, drainer._stop, backoff_min_s=0.05, backoff_max_s=0.1
    )
    return drainer


def test_a_cursor_that_cannot_be_written_does_not_stop_the_drain(tmp_path: Path) -> None:
    ops = FaultyOps()
    spool = Spool(tmp_path, segment_bytes=100, ops=ops)
    lines = [f"m v={i}i".encode() for i in range(50)]
    for line in lines:
        spool.append(line)
    ops.pwrite_error = ops.open_error = errno.ENOSPC
    writer = Writer()
    drainer = fast(Drainer(spool, writer, lambda line, why: None, max_request_bytes=40))
    drainer.start()
    wait(drainer.drained)
    assert writer.lines == lines
    assert spool.cursor_errors > 0 and drainer.thread.restarts == 0
    assert len(list(tmp_path.glob("seg-*.spool"))) <= 2, "drained segments kept the disk"
    drainer.stop(2)


def test_a_failing_dead_letter_store_keeps_the_bad_line_spooled(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(b"a v=1i\nBAD line\nb v=2i")
    rejected: list[bytes] = []
    store_down = threading.Event()
    store_down.set()

    def on_reject(line: bytes, why: str) -> None:
        if store_down.is_set():
            raise OSError(errno.ENOSPC, "database or disk is full")
        rejected.append(line)

    writer = Writer()
    drainer = fast(Drainer(spool, writer, on_reject))
    drainer.start()
    wait(lambda: drainer.stats.retries >= 3)
    assert not drainer.drained() and rejected == []
    assert "dead letter" in drainer.stats.last_error
    store_down.clear()
    wait(drainer.drained)
    assert rejected == [b"BAD line"] and drainer.stats.rejected_lines == 1
    assert set(writer.lines) == {b"a v=1i", b"b v=2i"}
    assert drainer.thread.restarts == 0
    drainer.stop(2)


def test_an_unexpected_exception_restarts_the_drainer_and_shows(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(b"m v=1i")
    writer = Writer()
    writer.fail = RuntimeError("surprise")
    drainer = fast(Drainer(spool, writer, lambda line, why: None))
    drainer.start()
    wait(lambda: drainer.thread.restarts >= 3)
    problem = drainer.thread.problem()
    assert problem is not None and "influx-drainer" in problem and "surprise" in problem
    writer.fail = None
    wait(drainer.drained)
    assert writer.lines == [b"m v=1i"]
    assert drainer.thread.is_alive()
    drainer.stop(2)


def test_stalled_time_grows_while_writes_fail_and_resets_after(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    writer = Writer()
    writer.fail = WriteError("InfluxDB unreachable: connection refused", retryable=True)
    drainer = fast(Drainer(spool, writer, lambda line, why: None))
    drainer.start()
    assert drainer.stalled_s() == 0.0  # nothing waits
    spool.append(b"m v=1i")
    wait(lambda: drainer.stalled_s() > 0.3)
    assert "connection refused" in drainer.stats.last_error
    writer.fail = None
    wait(drainer.drained)
    wait(lambda: drainer.stalled_s() == 0.0, 3)
    drainer.stop(2)


def test_stop_is_bounded_while_a_write_hangs(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    spool.append(b"m v=1i")
    writer = Writer()
    writer.hang.set()
    drainer = Drainer(spool, writer, lambda line, why: None)
    drainer.start()
    time.sleep(0.2)
    started = time.monotonic()
    drainer.stop(1.0)
    assert time.monotonic() - started < 2.0
    assert not drainer.drained()  # what was not written stays spooled
