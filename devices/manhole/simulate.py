"""Simulated manhole cover sensor: a cover at rest, rain in the well, incidents on demand."""

from __future__ import annotations

from typing import Any, ClassVar

from devices.base import SimMessage
from devices.manhole.model import depth_cm
from devices.milesight import MilesightSimulator

DEFAULT_DEPTH_CM = 300.0
#: Device-side angle threshold behind the ``alarm_*`` flags, in degrees.
ALARM_ANGLE = 15.0
#: Report interval while an incident lasts (alarm mode of real devices).
INCIDENT_INTERVAL_S = 600.0
HOUR = 3600.0


class ManholeSimulator(MilesightSimulator):
    """One cover: small noise around its installed angles, a low varying water level, gas
    traces, battery drain; incidents: opened, tilted, flood, gas.

    Install parameter ``depth_cm`` (default 300) bounds the flood: water rises to within
    30 cm of the cover.
    """

    incidents: ClassVar[tuple[str, ...]] = ("opened", "tilted", "flood", "gas")

    def setup(self) -> None:
        """Per-device state, from the install parameters and the seeded rng."""
        super().setup()
        depth = depth_cm(self.params) if "depth_cm" in self.params else DEFAULT_DEPTH_CM
        if depth is None:
            raise ValueError(
                f"{self.device_id}: depth_cm {self.params['depth_cm']!r} is not 0-500 cm"
            )
        self.depth = depth
        self.installed = (
            self.rng.uniform(-1.5, 1.5),
            self.rng.uniform(-1.5, 1.5),
            self.rng.uniform(-3, 3),
        )
        self.angles = self.installed
        self.state = "normal"
        self.cover_until = 0.0
        self.water_base = self.rng.uniform(0.02, 0.15) * self.depth
        self.water = self.water_base
        self.flood_target = 0.0
        self.flood_rate = 0.0  # cm per second
        self.flood_until = 0.0
        self.h2s_base = self.rng.uniform(0, 1)
        self.h2s = self.h2s_base
        self.gas_until = 0.0
        self.battery = self.rng.uniform(70, 100)
        self.drain = self.rng.uniform(0.0002, 0.001)  # % per hour

    def advance(self, now: float, dt: float) -> list[SimMessage]:
        """Water rises or recedes, the gas clears, a displaced cover is put back."""
        self.battery = max(0.0, self.battery - self.drain * dt / HOUR)
        if now < self.flood_until:
            self.water = min(self.flood_target, self.water + self.flood_rate * dt)
        else:
            # After the flood the well drains at a tenth of the rise rate.
            self.water = max(self.water_base, self.water - self.flood_rate / 10 * dt)
        if now >= self.gas_until:
            self.h2s = self.h2s_base
        if self.state != "normal" and now >= self.cover_until:
            self.state = "normal"
            self.angles = self.installed
        return []

    def interval(self) -> float:
        """Every heartbeat; every 10 min while an incident lasts."""
        busy = self.now < max(self.cover_until, self.flood_until, self.gas_until)
        return INCIDENT_INTERVAL_S if busy else self.heartbeat_s

    def reading(self) -> dict[str, Any]:
        """Angles with sensor noise, threshold flags, state, water, gas, vibration, battery."""
        x, y, z = (round(a + self.rng.gauss(0, 0.1), 2) for a in self.angles)
        water = self.water + self.rng.gauss(0, 0.5)
        return {
            "angle_x": x,
            "angle_y": y,
            "angle_z": z,
            "alarm_x": abs(x) >= ALARM_ANGLE,
            "alarm_y": abs(y) >= ALARM_ANGLE,
            "alarm_z": abs(z) >= ALARM_ANGLE,
            "state": self.state,
            "water_level": round(min(self.depth, max(0.0, water)), 1),
            "h2s": round(self.h2s + abs(self.rng.gauss(0, 0.1)), 2),
            "ch4": round(abs(self.rng.gauss(0, 0.5)), 2),
            "vibration": self.rng.random() < 0.03,
            "battery": round(self.battery, 1),
        }

    def begin(self, name: str, now: float) -> None:
        """opened: tilt 60-90°; tilted: tilt 15-30°; flood: water up to within 30 cm of the
        cover; gas: h2s 10-30 ppm."""
        if name in ("opened", "tilted"):
            low, high = (61, 89) if name == "opened" else (16, 29)
            self._lift(self.rng.uniform(low, high))
            self.state = name
            self.cover_until = now + self.rng.uniform(1, 3) * HOUR
        elif name == "flood":
            self.flood_target = max(self.water, self.depth - self.rng.uniform(5, 25))
            self.flood_rate = self.rng.uniform(2, 5) / 60
            # Rise to the target, then stay there for one to two hours.
            rise_s = (self.flood_target - self.water) / self.flood_rate
            self.flood_until = now + rise_s + self.rng.uniform(1, 2) * HOUR
        else:
            self.h2s = self.rng.uniform(10, 30)
            self.gas_until = now + self.rng.uniform(0.5, 2) * HOUR

    def _lift(self, tilt: float) -> None:
        """Tip the cover about a random axis so its overall tilt is about ``tilt`` degrees."""
        sign = self.rng.choice((-1, 1))
        x, y, z = self.installed
        if self.rng.randrange(2) == 0:
            self.angles = (sign * tilt, y, z)
        else:
            self.angles = (x, sign * tilt, z)
