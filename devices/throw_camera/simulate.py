"""Simulated throw-detection camera: a heartbeat every few minutes, throws and occlusions.

Scheduled messages carry the device time they were due at (``ts``), so readings that fall
due within one call of :meth:`ThrowCameraSimulator.step` keep distinct timestamps.
"""

from __future__ import annotations

import heapq
from typing import Any

from devices.base import DeviceSimulator, SimMessage, TopicKind
from devices.throw_camera.model import MAX_FLOOR, OBJECT_SIZES

FIRMWARE = "V5.7.3 build 240611"
NVR_URL = "http://nvr.local"
DEFAULT_FLOORS = 18
DEFAULT_FACADE = "south"
FRAME_W, FRAME_H = 1920.0, 1080.0
FRAME_MS = 40


class ThrowCameraSimulator(DeviceSimulator):
    """One PoE camera at the foot of a facade; params ``floors`` (1-100) and ``facade``."""

    incidents = ("throw", "occlusion")

    def setup(self) -> None:
        """Per-device state, from the install parameters and the seeded rng."""
        try:
            floors = int(self.params.get("floors", DEFAULT_FLOORS))
        except ValueError as err:
            raise ValueError(f"floors must be an integer, got {self.params['floors']!r}") from err
        self.floors = max(1, min(MAX_FLOOR, floors))
        self.facade = self.params.get("facade", DEFAULT_FACADE)
        self._next_heartbeat: float | None = None
        self._script: list[tuple[float, int, TopicKind, dict[str, Any]]] = []
        self._scheduled = 0

    def step(self, now: float) -> list[SimMessage]:
        """Send the heartbeat if due (at most one: devices do not backfill) and script steps."""
        if self._next_heartbeat is None:
            # A random phase keeps a freshly started fleet from reporting all at once.
            self._next_heartbeat = now + self.rng.uniform(0.0, self.heartbeat_s)
        due: list[tuple[float, int, TopicKind, dict[str, Any]]] = []
        if self._next_heartbeat <= now:
            last_due = self._next_heartbeat
            while self._next_heartbeat <= now:
                last_due = self._next_heartbeat
                self._next_heartbeat += self.heartbeat_s
            due.append((last_due, -1, "telemetry", {"event": "heartbeat", "fw": FIRMWARE}))
        while self._script and self._script[0][0] <= now:
            due.append(heapq.heappop(self._script))
        due.sort(key=lambda item: (item[0], item[1]))
        return [self._message(t, topic, body) for t, _, topic, body in due]

    def start_incident(self, name: str, now: float) -> list[SimMessage]:
        """Begin ``throw`` or ``occlusion``; ValueError for any other name."""
        if name == "throw":
            return [self._throw(now)]
        if name == "occlusion":
            # Someone covers the lens; the view comes back ("online") some minutes later.
            restored = now + self.rng.uniform(300.0, 1800.0)
            self._schedule(restored, "event", {"event": "online", "facade": self.facade})
            return [self._message(now, "event", {"event": "occlusion", "facade": self.facade})]
        raise ValueError(f"throw_camera has no incident {name!r}; known: throw, occlusion")

    def _throw(self, now: float) -> SimMessage:
        rng = self.rng
        # Ground-floor throws are rare and hard to see; analytics start at floor 2.
        estimate = rng.randint(min(2, self.floors), self.floors)
        spread = rng.randint(1, 2)
        seq = self.next_seq()
        body: dict[str, Any] = {
            "event": "throw",
            "facade": self.facade,
            "floor_estimate": estimate,
            "floor_range": [max(1, estimate - spread), min(self.floors, estimate + spread)],
            "confidence": round(rng.uniform(0.6, 0.99), 2),
            "object_size": rng.choice(OBJECT_SIZES),
            "trajectory": self._trajectory(estimate),
            "snapshot_url": f"{NVR_URL}/snap/{self.device_id}/{seq}.jpg",
            "clip_url": f"{NVR_URL}/clip/{self.device_id}/{seq}.mp4",
        }
        return self._message(now, "event", body, seq=seq)

    def _trajectory(self, floor: int) -> list[list[float]]:
        """A short fall seen from below: higher floors start nearer the top of the frame."""
        rng = self.rng
        y = FRAME_H * 0.9 * (1.0 - floor / (self.floors + 1))
        x = rng.uniform(0.1 * FRAME_W, 0.9 * FRAME_W)
        drift = rng.uniform(-6.0, 6.0)
        points: list[list[float]] = []
        for index in range(rng.randint(6, 20)):
            points.append([index * FRAME_MS, round(x, 1), round(y, 1)])
            x = max(0.0, min(FRAME_W - 1, x + drift))
            y = min(FRAME_H - 1, y + 4.0 * (index + 1))
        return points

    def _schedule(self, due: float, topic: TopicKind, body: dict[str, Any]) -> None:
        self._scheduled += 1
        heapq.heappush(self._script, (due, self._scheduled, topic, body))

    def _message(
        self, t: float, topic: TopicKind, body: dict[str, Any], *, seq: int | None = None
    ) -> SimMessage:
        payload = {"ts": int(t * 1000), "seq": self.next_seq() if seq is None else seq, **body}
        return SimMessage(topic, self.codec.encode(payload))
