"""Supervised threads: restarted with backoff after an exception, their state told."""

from __future__ import annotations

import itertools
import threading
import time

from gateway.core.supervise import FLAP_RESTARTS, SupervisedThread


def wait(condition: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_restarts_after_an_exception_until_the_work_runs() -> None:
    stopping = threading.Event()
    runs: list[float] = []

    def work() -> None:
        runs.append(time.monotonic())
        if len(runs) <= FLAP_RESTARTS:
            raise ValueError(f"failure {len(runs)}")
        stopping.wait()

    thread = SupervisedThread("t", work, stopping, backoff_min_s=0.02, backoff_max_s=0.08)
    thread.start()
    wait(lambda: len(runs) == FLAP_RESTARTS + 1)
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps == sorted(gaps), "backoff should grow"
    assert thread.restarts == FLAP_RESTARTS
    problem = thread.problem()
    assert problem is not None and "restarted 3 times" in problem and "failure 3" in problem
    stopping.set()
    thread.join(2)
    assert not thread.is_alive() and thread.problem() is None


def test_down_while_waiting_to_restart() -> None:
    stopping = threading.Event()
    thread = SupervisedThread("w", _boom, stopping, backoff_min_s=5, backoff_max_s=5)
    thread.start()
    wait(lambda: thread.restarts == 1)
    problem = thread.problem()
    assert problem is not None and "down for" in problem and "KeyError" in problem
    stopping.set()
    thread.join(2)
    assert not thread.is_alive()


def test_a_thread_whose_work_returned_is_reported_ended() -> None:
    thread = SupervisedThread("e", lambda: None, threading.Event())
    thread.start()
    thread.join(2)
    assert thread.problem() == "thread e has ended"


def test_healthy_thread_has_no_problem() -> None:
    stopping = threading.Event()

    def work() -> None:
        stopping.wait()

    thread = SupervisedThread("h", work, stopping)
    thread.start()
    assert thread.problem() is None and thread.restarts == 0
    stopping.set()
    thread.join(2)


def _boom() -> None:
    raise KeyError("missing")
