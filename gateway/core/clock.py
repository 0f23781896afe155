"""An injectable clock, so SLA timers and escalation can be tested without sleeping.

Every time here is a timezone-aware UTC ``datetime``; every duration is in seconds.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Source of the current time (timezone-aware, UTC)."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current wall-clock time, timezone-aware UTC."""
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, simulations)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = require_utc(start or datetime(2025, 1, 1, 8, 0, tzinfo=UTC))
        self._lock = threading.Lock()

    def now(self) -> datetime:
        """The time the clock was last set or advanced to."""
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward by ``seconds`` (must not be negative); returns the new time."""
        if seconds < 0:
            raise ValueError(f"a clock does not run backwards: advance({seconds})")
        with self._lock:
            self._now += timedelta(seconds=seconds)
            return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (timezone-aware)."""
        with self._lock:
            self._now = require_utc(when)


def require_utc(when: datetime) -> datetime:
    """``when`` converted to UTC; refuses naive datetimes instead of guessing their zone."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"naive datetime {when.isoformat()} refused: give a timezone")
    return when.astimezone(UTC)


def from_ns(ts_ns: int) -> datetime:
    """Nanoseconds since the Unix epoch → timezone-aware UTC datetime (microsecond precision)."""
    seconds, ns = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=ns // 1000)


def after(when: datetime, seconds: float | None) -> datetime | None:
    """``when`` plus ``seconds``, or None when there is no duration."""
    return None if seconds is None else when + timedelta(seconds=seconds)


def iso(when: datetime | None) -> str | None:
    """ISO 8601 text of an aware datetime, or None."""
    return None if when is None else when.isoformat()
