"""Simulated smoke alarm: a rare heartbeat with slow drift, and scripted incidents.

Scheduled messages carry the device time they were due at (``ts``), not the time the fleet
runner happened to call :meth:`SmokeSimulator.step`, so two readings never share a timestamp
(InfluxDB would keep only the last of them).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from devices.base import DeviceSimulator, SimMessage, TopicKind
from devices.smoke.model import ALARM_SMOKE_DB_M, SmokeEvent, SmokeState

FIRMWARE = "2.3.1"
LOW_BATTERY_PCT = 20.0
#: Background obscuration of a clean chamber (dB/m).
CLEAN_SMOKE_MAX = 0.03
#: Smoke levels of a developing fire, one message every ``FIRE_STEP_S`` after the alarm.
FIRE_SMOKE_RISE = (0.25, 0.35, 0.48, 0.6)
FIRE_STEP_S = 30.0

#: "rest" means: whatever the device shows when nothing is wrong (normal or low_battery).
NextState = SmokeState | Literal["rest"]


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


@dataclass(frozen=True, slots=True)
class _Step:
    """A scripted change of the device, applied and reported when it falls due."""

    topic: TopicKind
    state: NextState | None = None
    event: SmokeEvent | None = None
    smoke: float | None = None
    temperature: float | None = None


class SmokeSimulator(DeviceSimulator):
    """One NB-IoT smoke alarm: heartbeat every ``heartbeat_s``, alarms sent at once."""

    incidents = ("fire", "fault", "tamper", "low_battery")

    def setup(self) -> None:
        """Per-device state, from the install parameters and the seeded rng."""
        self._state: SmokeState = "normal"
        self._smoke = self.rng.uniform(0.0, 0.02)
        self._temperature = self.rng.uniform(18.0, 28.0)
        self._battery = self.rng.uniform(60.0, 100.0)
        self._rsrp = self.rng.uniform(-110.0, -80.0)
        self._snr = self.rng.uniform(0.0, 15.0)
        self._next_heartbeat: float | None = None
        self._script: list[tuple[float, int, _Step]] = []
        self._scheduled = 0

    # -- the clock -----------------------------------------------------------------------

    def step(self, now: float) -> list[SimMessage]:
        """Send the heartbeat if due (at most one: devices do not backfill) and script steps."""
        if self._next_heartbeat is None:
            # A random phase keeps a freshly started fleet from reporting all at once.
            self._next_heartbeat = now + self.rng.uniform(0.0, self.heartbeat_s)
        due: list[tuple[float, int, _Step | None]] = []
        if self._next_heartbeat <= now:
            last_due = self._next_heartbeat
            while self._next_heartbeat <= now:
                last_due = self._next_heartbeat
                self._next_heartbeat += self.heartbeat_s
            due.append((last_due, -1, None))
        while self._script and self._script[0][0] <= now:
            due.append(heapq.heappop(self._script))
        due.sort(key=lambda item: (item[0], item[1]))
        return [self._heartbeat(t) if s is None else self._apply(t, s) for t, _, s in due]

    def start_incident(self, name: str, now: float) -> list[SimMessage]:
        """Begin ``fire``, ``fault``, ``tamper`` or ``low_battery``; ValueError otherwise."""
        starters: dict[str, Callable[[float], _Step]] = {
            "fire": self._fire,
            "fault": self._fault,
            "tamper": self._tamper,
            "low_battery": self._low_battery,
        }
        if name not in starters:
            raise ValueError(f"smoke has no incident {name!r}; known: {', '.join(starters)}")
        return [self._apply(now, starters[name](now))]

    # -- incidents: each returns the step to send now and schedules the rest --------------

    def _fire(self, now: float) -> _Step:
        baseline_smoke = min(self._smoke, CLEAN_SMOKE_MAX)
        baseline_temp = _clamp(self._temperature, 18.0, 28.0)
        heat = baseline_temp + self.rng.uniform(3.0, 8.0)
        for index, level in enumerate(FIRE_SMOKE_RISE, start=1):
            heat = _clamp(heat + self.rng.uniform(1.0, 4.0), -20.0, 85.0)
            rise = _Step("telemetry", smoke=level, temperature=heat)
            self._schedule(now + index * FIRE_STEP_S, rise)
        last_rise = now + len(FIRE_SMOKE_RISE) * FIRE_STEP_S
        if self.rng.random() < 0.5:
            # A resident presses the silence button; the alarm stays up, the sounder stops.
            self._schedule(last_rise + 60.0, _Step("event", state="silenced", event="silenced"))
        cleared = _Step(
            "event",
            state="rest",
            event="alarm_cleared",
            smoke=baseline_smoke,
            temperature=baseline_temp,
        )
        self._schedule(last_rise + self.rng.uniform(600.0, 1200.0), cleared)
        return _Step(
            "event",
            state="alarm",
            event="alarm_raised",
            smoke=ALARM_SMOKE_DB_M,
            temperature=heat - 4.0,
        )

    def _fault(self, now: float) -> _Step:
        # A technician cleans the chamber hours later and runs the self-test.
        repaired = now + self.rng.uniform(2 * 3600.0, 6 * 3600.0)
        self._schedule(repaired, _Step("event", state="test", event="self_test"))
        self._schedule(repaired + 30.0, _Step("event", state="rest"))
        return _Step("event", state="fault", event="fault")

    def _tamper(self, now: float) -> _Step:
        # Someone takes the alarm off its base and puts it back later.
        self._schedule(now + self.rng.uniform(600.0, 3600.0), _Step("event", state="rest"))
        return _Step("event", state="tamper", event="tamper")

    def _low_battery(self, now: float) -> _Step:
        self._battery = self.rng.uniform(8.0, LOW_BATTERY_PCT - 1.0)
        return _Step("event", state="rest")

    # -- messages ------------------------------------------------------------------------

    def _schedule(self, due: float, step: _Step) -> None:
        self._scheduled += 1
        heapq.heappush(self._script, (due, self._scheduled, step))

    def _rest_state(self) -> SmokeState:
        return "low_battery" if self._battery < LOW_BATTERY_PCT else "normal"

    def _apply(self, t: float, step: _Step) -> SimMessage:
        if step.state is not None:
            self._state = self._rest_state() if step.state == "rest" else step.state
        if step.smoke is not None:
            self._smoke = step.smoke
        if step.temperature is not None:
            self._temperature = step.temperature
        return self._message(t, step.topic, step.event)

    def _heartbeat(self, t: float) -> SimMessage:
        rng = self.rng
        if self._state not in ("alarm", "silenced"):
            self._smoke = _clamp(self._smoke + rng.gauss(0.0, 0.003), 0.0, CLEAN_SMOKE_MAX)
            self._temperature = _clamp(self._temperature + rng.gauss(0.0, 0.8), 18.0, 28.0)
        drain = 0.001 + abs(rng.gauss(0.0, 0.0005))
        self._battery = _clamp(self._battery - drain, 0.0, 100.0)
        self._rsrp = _clamp(self._rsrp + rng.gauss(0.0, 1.5), -120.0, -70.0)
        self._snr = _clamp(self._snr + rng.gauss(0.0, 0.8), -5.0, 20.0)
        if self._state in ("normal", "low_battery"):
            self._state = self._rest_state()
        return self._message(t, "telemetry", None, with_fw=True)

    def _message(
        self, t: float, topic: TopicKind, event: SmokeEvent | None, *, with_fw: bool = False
    ) -> SimMessage:
        body: dict[str, Any] = {
            "ts": int(t * 1000),
            "seq": self.next_seq(),
            "state": self._state,
            "smoke": round(self._smoke, 3),
            "temperature": round(self._temperature, 1),
            "battery": round(self._battery, 3),
            "rsrp": round(self._rsrp, 1),
            "snr": round(self._snr, 1),
        }
        if event is not None:
            body["event"] = event
        if with_fw:
            body["fw"] = FIRMWARE
        return SimMessage(topic, self.codec.encode(body))
