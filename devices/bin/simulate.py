"""Simulated bin fill-level sensor: waste piles up, crews empty bins, incidents on demand."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from devices.base import SimMessage
from devices.bin.model import MAX_DISTANCE_MM, depth_mm
from devices.milesight import MilesightSimulator

DEFAULT_DEPTH_MM = 1000.0
#: Fill % from which a pickup is scheduled and the sensor reports more often.
NEAR_FULL = 80.0
#: Report interval while a fire is burning, so a rise of 10 °C in 10 min is seen.
FIRE_INTERVAL_S = 120.0
FIRE_RISE_PER_S = 3.0 / 60
HOUR = 3600.0


class BinSimulator(MilesightSimulator):
    """One bin: fill rises at its own rate, a crew empties it some hours after it is near
    full, the temperature follows the day; incidents: overflow, fire, tilt.

    Install parameter ``depth_mm`` (default 1000) turns fill into the distance it reports.
    """

    incidents: ClassVar[tuple[str, ...]] = ("overflow", "fire", "tilt")

    def setup(self) -> None:
        """Per-device state, from the install parameters and the seeded rng."""
        super().setup()
        depth = depth_mm(self.params) if "depth_mm" in self.params else DEFAULT_DEPTH_MM
        if depth is None:
            raise ValueError(
                f"{self.device_id}: depth_mm {self.params['depth_mm']!r} is not a positive number"
            )
        self.depth = depth
        self.fill = self.rng.uniform(0, 60)
        self.fill_rate = self.rng.uniform(1.0, 4.0)  # % per hour
        self.base_temperature = self.rng.uniform(8, 28)
        self.temperature = self.base_temperature
        self.battery = self.rng.uniform(60, 100)
        self.drain = self.rng.uniform(0.0005, 0.002)  # % per hour
        self.position = "normal"
        self.collect_at: float | None = None
        self.fire_target = 0.0
        self.fire_until = 0.0
        self.tilt_until = 0.0

    def ambient(self, now: float) -> float:
        """Air temperature: the bin's base value with a daily swing peaking mid-afternoon."""
        return self.base_temperature + 5 * math.sin(2 * math.pi * (now / 86400 - 0.375))

    def advance(self, now: float, dt: float) -> list[SimMessage]:
        """Waste piles up, the battery drains, the temperature follows fire or the day."""
        self.fill = min(100.0, self.fill + self.fill_rate * dt / HOUR)
        self.battery = max(0.0, self.battery - self.drain * dt / HOUR)
        if now < self.fire_until:
            self.temperature = min(self.fire_target, self.temperature + FIRE_RISE_PER_S * dt)
        else:
            # Relax toward the air temperature with a time constant of half an hour.
            weight = min(1.0, dt / 1800)
            self.temperature += (self.ambient(now) - self.temperature) * weight
        if self.position == "tilt" and now >= self.tilt_until:
            self.position = "normal"
        if self.collect_at is None and self.fill >= NEAR_FULL:
            self.collect_at = now + self.rng.uniform(1, 6) * HOUR
        if self.collect_at is not None and now >= self.collect_at:
            self.collect_at = None
            self.fill = self.rng.uniform(0, 10)
            return [self.message("event", {**self.reading(), "event": "emptied"}, now)]
        return []

    def interval(self) -> float:
        """Every heartbeat; three times as often near full; every 2 min during a fire."""
        if self.now < self.fire_until:
            return FIRE_INTERVAL_S
        if self.fill >= NEAR_FULL:
            return self.heartbeat_s / 3
        return self.heartbeat_s

    def reading(self) -> dict[str, Any]:
        """Distance from the lid (what the sensor measures), temperature, position, battery."""
        level_mm = self.depth * (1 - self.fill / 100)
        distance = round(min(MAX_DISTANCE_MM, max(0.0, level_mm + self.rng.gauss(0, 3))))
        temperature = self.temperature + self.rng.gauss(0, 0.3)
        return {
            "distance": distance,
            "temperature": round(min(85.0, max(-30.0, temperature)), 1),
            "position": self.position,
            "battery": round(self.battery, 1),
        }

    def begin(self, name: str, now: float) -> None:
        """overflow: fill 96-100 %; fire: temperature climbs to 72-84 °C; tilt: knocked over."""
        if name == "overflow":
            self.fill = self.rng.uniform(96, 100)
            self.collect_at = now + self.rng.uniform(2, 6) * HOUR
        elif name == "fire":
            self.fire_target = self.rng.uniform(72, 84)
            self.fire_until = now + self.rng.uniform(20, 45) * 60
            self.temperature += self.rng.uniform(3, 6)
        else:
            self.position = "tilt"
            self.tilt_until = now + self.rng.uniform(1, 4) * HOUR
