"""Threads that restart their work after an unexpected exception.

A :class:`SupervisedThread` runs a work function; if it raises, the exception is logged with
its traceback and counted, and the function runs again after a backoff (doubling up to a
ceiling, starting over once a run lasted long). Expected failures (InfluxDB down, disk
full) are handled inside the work functions with their own retries; what reaches the
supervisor is a bug or a surprise, and it must not silently stop ingest or draining.

:meth:`SupervisedThread.problem` says why the thread is not healthy (down and waiting to
restart, flapping, or ended); ``/health/ready`` shows it and ``scc_thread_restarts_total``
counts restarts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from gateway.core.backoff import Backoff, Retry

log = logging.getLogger(__name__)

#: This many restarts within the window count as flapping (not ready).
FLAP_RESTARTS = 3
FLAP_WINDOW_S = 60.0


class SupervisedThread:
    """A daemon thread running ``target`` until it returns; restarted when it raises."""

    def __init__(
        self,
        name: str,
        target: Callable[[], None],
        stopping: threading.Event,
        backoff_min_s: float = 0.5,
        backoff_max_s: float = 30.0,
    ) -> None:
        self.name = name
        self._target = target
        self._stopping = stopping
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.restarts = 0
        self.last_error = ""
        self._down_since: float | None = None
        self._recent: deque[float] = deque(maxlen=FLAP_RESTARTS)
        self._started = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._started = True
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end (after ``stopping`` was set)."""
        if self._started:
            self._thread.join(timeout)

    def is_alive(self) -> bool:
        """Whether the thread runs (its work may be waiting to restart)."""
        return self._thread.is_alive()

    def _loop(self) -> None:
        retry = Retry(Backoff(self.backoff_min_s, self.backoff_max_s))
        while True:
            began = time.monotonic()
            try:
                self._target()
                return  # the work ends only when asked to stop
            except Exception as err:
                if self._stopping.is_set():
                    log.warning("thread %s ended with %r while stopping", self.name, err)
                    return
                now = time.monotonic()
                if now - began > 2 * self.backoff_max_s:
                    retry.reset()  # it had been running well: not a loop
                delay = retry.next_delay()
                self.restarts += 1
                self.last_error = f"{type(err).__name__}: {err}"[:300]
                self._recent.append(now)
                self._down_since = now
                log.exception("thread %s failed; restarting in %.1f s", self.name, delay)
            if self._stopping.wait(delay):
                return
            self._down_since = None
            log.warning("thread %s restarted (restart %d)", self.name, self.restarts)

    def problem(self, now: float | None = None) -> str | None:
        """Why this thread is not healthy, or None."""
        now = time.monotonic() if now is None else now
        if self._stopping.is_set():
            return None
        if self._started and not self._thread.is_alive():
            return f"thread {self.name} has ended"
        down = self._down_since
        if down is not None:
            return f"thread {self.name} down for {now - down:.0f} s after {self.last_error}"
        recent = self._recent
        if len(recent) == FLAP_RESTARTS and now - recent[0] < FLAP_WINDOW_S:
            return (
                f"thread {self.name} restarted {FLAP_RESTARTS} times within "
                f"{FLAP_WINDOW_S:.0f} s, last after {self.last_error}"
            )
        return None
