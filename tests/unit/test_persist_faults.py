"""Persister under faults: nothing is acknowledged while the spool or database fails, a
stop is bounded whatever they do, an unexpected exception fails the jobs in hand (so they
are redelivered) and the stage restarts."""

from __future__ import annotations

import errno
import time
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import cast

import pytest

from gateway.alerting.rulestage import RuleStage
from gateway.ingest.pipeline import Rejected
from gateway.runtime.persist import Persister, PersistJob
from gateway.runtime.schema import make_engine
from gateway.storage.deadletter import DeadLetterStore
from gateway.storage.spool import Spool

from .faulty_files import FaultyOps


def make(tmp_path: Path) -> tuple[Persister, Spool, FaultyOps]:
    ops = FaultyOps()
    spool = Spool(tmp_path / "spool", ops=ops)
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    # No job here carries a rules outcome, so the rule stage is never called.
    persister = Persister(spool, DeadLetterStore(engine), cast(RuleStage, None))
    persister.start()
    return persister, spool, ops


def records(spool: Spool) -> list[bytes]:
    out: list[bytes] = []
    while (chunk := spool.read(1 << 20)) is not None:
        out += chunk.records
        spool.commit(chunk)
    return out


def wait_done(future: Future[None], timeout: float) -> None:
    future.result(timeout)


@pytest.mark.parametrize(
    ("fault", "value"),
    [("write_error", errno.ENOSPC), ("fsync_error", errno.EIO), ("short_writes", 3)],
)
def test_a_failing_spool_holds_the_ack_until_it_heals(
    tmp_path: Path, fault: str, value: int
) -> None:
    persister, spool, ops = make(tmp_path)
    setattr(ops, fault, value)
    if fault == "short_writes":
        ops.write_error = errno.ENOSPC  # the disk stays full after the short write
    future = persister.submit(PersistJob(b"smoke v=1i 1", [], None))
    time.sleep(0.6)
    assert not future.done(), "acknowledged while the spool failed"
    problem = persister.problem()
    assert problem is not None and "spool" in problem
    ops.heal()
    wait_done(future, 5)
    assert persister.problem() is None
    assert records(spool) == [b"smoke v=1i 1"]
    persister.stop(2)


def test_stop_is_bounded_while_the_spool_keeps_failing(tmp_path: Path) -> None:
    persister, _, ops = make(tmp_path)
    ops.write_error = errno.ENOSPC
    futures = [persister.submit(PersistJob(f"m v={i}i".encode(), [], None)) for i in range(5)]
    time.sleep(0.3)
    started = time.monotonic()
    persister.stop(2.0)
    assert time.monotonic() - started < 2.5
    for future in futures:
        assert future.done() and future.exception() is not None  # failed: never acked


def test_a_failing_database_holds_the_ack_and_the_spool_gets_nothing(tmp_path: Path) -> None:
    persister, spool, _ = make(tmp_path)
    calls = {"n": 0}
    real = persister.dead_letters.add_many

    def flaky(items: Sequence[Rejected]) -> None:
        calls["n"] += 1
        if calls["n"] <= 3:
            raise OSError(errno.ENOSPC, "database or disk is full")
        real(items)

    persister.dead_letters.add_many = flaky  # type: ignore[method-assign]
    bad = Rejected(time.time_ns(), "scc/v1/x/telemetry", "x", "malformed_json", "why", b"{")
    future = persister.submit(PersistJob(b"smoke v=2i 2", [bad], None))
    time.sleep(0.2)
    assert not future.done()
    problem = persister.problem()
    assert problem is not None and "database" in problem
    wait_done(future, 5)
    assert records(spool) == [b"smoke v=2i 2"]
    assert persister.dead_letters.counts_by_reason() == {"malformed_json": 1}
    persister.stop(2)


def test_an_unexpected_exception_fails_the_jobs_in_hand_and_restarts(tmp_path: Path) -> None:
    persister, spool, _ = make(tmp_path)
    real = persister._append
    calls = {"n": 0}

    def buggy(groups: list[object]) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise SystemError("a bug")  # not an error the retry loop expects
        real(groups)  # type: ignore[arg-type]

    persister._append = buggy  # type: ignore[assignment,method-assign]
    persister._with_retries = _no_retry(persister)  # type: ignore[assignment,method-assign]
    first = persister.submit(PersistJob(b"m v=1i", [], None))
    with pytest.raises(SystemError):
        first.result(5)
    second = persister.submit(PersistJob(b"m v=2i", [], None))
    wait_done(second, 10)
    assert persister.threads[1].restarts == 1
    assert records(spool) == [b"m v=2i"]
    persister.stop(2)


def _no_retry(persister: Persister) -> object:
    """A retry loop that lets the exception through, as a bug outside it would."""

    def run(stage: str, action: object, final: bool) -> None:
        action()  # type: ignore[operator]

    return run
