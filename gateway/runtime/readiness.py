"""Readiness of the ingest path: every part it needs, each with the reason it is not ok.

``/health/ready`` (gateway/api/routes/health.py) adds the database check and answers 503
with these reasons when any part fails; ``/health`` stays a plain liveness answer.

Parts: the MQTT session (subscribed), the persister (database and spool commits, the
spool's last append), the drainer (InfluxDB written within ``influx_stall_s`` while data
waits) and every supervised thread (not down, not flapping).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.core.supervise import SupervisedThread
from gateway.runtime.persist import Persister
from gateway.storage.drainer import Drainer
from gateway.storage.spool import Spool

OK = "ok"


class Session(Protocol):
    """What readiness needs of an MQTT source: ``connected`` is set while subscribed."""

    reconnects: int
    connected: asyncio.Event


@dataclass(frozen=True, slots=True)
class Report:
    """Each part's state: ``"ok"`` or why not."""

    checks: dict[str, str] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        """Whether every part is ok."""
        return all(value == OK for value in self.checks.values())

    def reasons(self) -> list[str]:
        """``part: reason`` for every part that is not ok."""
        return [f"{part}: {value}" for part, value in self.checks.items() if value != OK]


@dataclass(frozen=True, slots=True)
class IngestParts:
    """The running parts readiness looks at."""

    sessions: dict[str, Session]
    broker: str
    persister: Persister
    spool: Spool
    drainer: Drainer
    threads: Iterable[SupervisedThread]
    influx_stall_s: float


def check(parts: IngestParts, now: float | None = None) -> Report:
    """The readiness report of the ingest path."""
    now = time.monotonic() if now is None else now
    checks: dict[str, str] = {}
    for name, session in parts.sessions.items():
        checks[name] = (
            OK
            if session.connected.is_set()
            else f"not subscribed: no session with the broker at {parts.broker} "
            f"({session.reconnects} reconnects)"
        )
    spool = parts.spool
    checks["persist"] = parts.persister.problem(now) or (
        f"spool {spool.append_error}" if spool.append_error else OK
    )
    stalled = parts.drainer.stalled_s(now)
    if stalled > parts.influx_stall_s:
        error = parts.drainer.stats.last_error or "no write attempt finished"
        checks["influxdb"] = (
            f"no successful write for {stalled:.0f} s while {spool.depth_bytes()} bytes wait "
            f"in the spool: {error}"
        )
    else:
        checks["influxdb"] = OK
    problems = [p for p in (t.problem(now) for t in parts.threads) if p]
    checks["threads"] = "; ".join(problems) if problems else OK
    return Report(checks)
