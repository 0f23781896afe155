"""The one backoff policy of the gateway: exponential delays up to a ceiling, with jitter.

Attempt ``n`` (1-based) may wait up to ``first_s × 2^(n-1)``, never more than ``max_s``; the
jitter says how much of that is drawn at random (``none``: all of it; ``full``: 0 up to it;
``equal``: half up to all; ``above_first``: ``first_s`` up to it). Every retry loop waits by
it with its own figures:

============================  =========  =======  ===========
loop                          first_s    max_s    jitter
============================  =========  =======  ===========
persister (spool, database)   0.1        2        none
supervised thread restarts    0.5        30       none
drainer (InfluxDB writes)     0.2        5        above_first
MQTT reconnect                0.2        10       full
notifications (per event)     1          60       equal
alert rows, database locked   0.02       1        none
============================  =========  =======  ===========

Full jitter keeps a fleet of gateways from reconnecting in lockstep; equal jitter spreads
retries of one event but never retries at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Jitter = Literal["none", "full", "equal", "above_first"]

#: Past this many doublings every sane ceiling is reached; it keeps 2**n a small float.
_MAX_DOUBLINGS = 62


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff from ``first_s`` up to ``max_s`` (seconds), with ``jitter``."""

    first_s: float
    max_s: float
    jitter: Jitter = "none"

    def __post_init__(self) -> None:
        if not 0 <= self.first_s <= self.max_s:
            raise ValueError(f"backoff needs 0 <= first_s <= max_s, got {self}")

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed ``attempt`` (1-based)."""
        doublings = min(max(attempt - 1, 0), _MAX_DOUBLINGS)
        return min(self.max_s, self.first_s * 2.0**doublings)

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait after failed ``attempt`` (1-based); ``rng`` draws the jitter (default: the
        ``random`` module's generator)."""
        ceiling = self.ceiling(attempt)
        if self.jitter == "none":
            return ceiling
        if self.jitter == "full":
            low = 0.0
        elif self.jitter == "equal":
            low = ceiling / 2
        else:
            low = min(self.first_s, ceiling)
        uniform = random.uniform if rng is None else rng.uniform
        return uniform(low, ceiling)


class Retry:
    """Where one retry loop is in its backoff: :meth:`next_delay` after each failure,
    :meth:`reset` once the work succeeds (the next failure waits the first delay again)."""

    def __init__(self, policy: Backoff, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.rng = rng
        self.attempt = 0

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before trying again."""
        self.attempt += 1
        return self.policy.delay(self.attempt, self.rng)

    @property
    def ceiling(self) -> float:
        """The longest wait of the current attempt (what logs tell as "up to")."""
        return self.policy.ceiling(max(self.attempt, 1))

    def reset(self) -> None:
        """The work succeeded: start from the first delay again."""
        self.attempt = 0
