"""Per-device limits the pipeline applies: the accepted window of device time, and the rate.

**Device time.** A reading's ``ts`` must lie from ``ts_max_age_s`` before to ``ts_max_skew_s``
after the batch's receive time (and never before 2000): ``stale_ts`` or ``future_ts``
otherwise. A clock gone wrong (a dead RTC battery reads 2099 or 1970) would otherwise write
points far from their time and, through the rules engine's ordering, make the device's later
readings look late.

**Rate.** A device may send ``rate_per_s`` messages a second (``burst`` at once) by the
gateway's clock: a generic cell rate algorithm with one float per device, the time at which
its bucket is full again (``live``). Past that, a message still passes when all its readings
carry the device's ``ts`` and those fit the same rate by the device's own clock (``own``,
the same algorithm over device time, kept only for devices that went over): an outage
backlog, readings spaced as the device took them but delivered at once, is kept; a flood
(no ts, many readings per device second) is not. Once a device has gone over, its messages
within the rate count on its own clock too, so that a sustained flood gets the rate, not
twice it (unless it mixes messages without ts in). The device's own clock starts no earlier
than the newest reading the rules engine has applied for it (``latest``; saved with the
rule state, so also after a restart) and never more than ``backlog_s`` back: a device
cannot make up a past older than what it already reported, and one never heard from gains
at most ``backlog_s`` of its own time, once.

The per-message checks are inlined in ``Pipeline.process`` (each Python call there costs
~0.1 us); this module holds the state, the settings and the rarer paths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from devices.base import TS_MIN_MS, DecodeError

NS = 1_000_000_000


def iso(ns: float) -> str:
    """Epoch nanoseconds as UTC ISO 8601 to the second."""
    return datetime.fromtimestamp(ns / NS, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def span(ns: float) -> str:
    """A duration in the unit a reader takes in at a glance: 90 s, 12 min, 5.0 h, 3.2 days."""
    seconds = ns / NS
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172_800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass(slots=True)
class DeviceLimits:
    """Settings and per-device state of the time window and the rate limit.

    ``begin(recv)`` works out, once per batch, what every message of it is checked against
    (``high``, ``low``, ``floor``); the per-message code reads those attributes.
    """

    rate_per_s: float = 0.0  # 0: no rate limit
    burst: int = 200
    ts_max_skew_s: float = 300.0
    ts_max_age_s: float = 7 * 86400.0
    backlog_s: float = 86400.0
    #: Per device: when its bucket is full again, by the gateway's clock (ns).
    live: dict[str, float] = field(default_factory=dict)
    #: The same by the device's own clock (its ts, ns), for devices that went over.
    own: dict[str, float] = field(default_factory=dict)
    #: The newest reading applied for a device (device id, kind → ns), if known: where its
    #: own clock starts (``rules.Engine.latest_reading``; None: ``backlog_s`` back only).
    latest: Callable[[str, str], int | None] | None = None
    #: One message's share of a second at the allowed rate (0 without a limit), and how far
    #: ahead a bucket may be full again (a burst less one message), both in ns.
    interval: float = 0.0
    allowance: float = 0.0
    #: The batch's window of accepted device times, and how far back the own-clock budget
    #: reaches (``begin``).
    high: int = 0
    low: int = 0
    floor: float = 0.0

    def __post_init__(self) -> None:
        self.interval = NS / self.rate_per_s if self.rate_per_s else 0.0
        self.allowance = (self.burst - 1.0) * self.interval

    def begin(self, recv: int) -> None:
        """Prepare for a batch received at ``recv`` (epoch ns)."""
        self.high = recv + round(self.ts_max_skew_s * NS)
        self.low = max(recv - round(self.ts_max_age_s * NS), TS_MIN_MS * 1_000_000)
        self.floor = recv - self.backlog_s * NS
        if len(self.live) > 2_000_000 or len(self.own) > 2_000_000:
            self.live.clear()  # bounds memory; at worst one more burst per device
            self.own.clear()

    def bad_ts(self, ts: int, recv: int, where: str = "") -> DecodeError:
        """``future_ts`` or ``stale_ts`` for a device time outside ``high``..``low``."""
        if ts > recv:
            return DecodeError(
                "future_ts",
                f"{where}ts {iso(ts)} is {span(ts - recv)} ahead of the gateway clock "
                f"({iso(recv)}); at most {span(self.ts_max_skew_s * NS)} allowed "
                "(ts_max_skew_s)",
            )
        return DecodeError(
            "stale_ts",
            f"{where}ts {iso(ts)} is {span(recv - ts)} older than the gateway clock "
            f"({iso(recv)}); at most {span(self.ts_max_age_s * NS)} allowed (ts_max_age_s)",
        )

    def rate_limited(self) -> DecodeError:
        """The rejection of a message over the rate by both clocks."""
        return DecodeError(
            "rate_limited",
            f"device sends more than {self.rate_per_s:g} msg/s (burst {self.burst}), by the "
            "gateway's clock and by its own ts; message kept as a dead letter",
        )

    def backlog(self, device_id: str, kind: str, ts: int) -> None:
        """Let a message over the rate by the gateway's clock pass as backlog if its device
        time ``ts`` fits the rate by the device's own clock; ``rate_limited`` otherwise."""
        # Where its bucket is full again: never before the floor nor the newest reading
        # applied, and (the algorithm) not before this message's own time.
        known = None if self.latest is None else self.latest(device_id, kind)
        tat = max(self.own.get(device_id, self.floor), self.floor, ts, known or self.floor)
        if tat - ts > self.allowance:
            raise self.rate_limited()
        self.own[device_id] = tat + self.interval

    def charge(self, device_id: str, ts: int) -> None:
        """Count a message within the rate on the own clock of a device that went over."""
        tat = self.own[device_id]
        self.own[device_id] = (tat if tat > ts else ts) + self.interval
