"""smoke: independent photoelectric smoke alarm (烟感), NB-IoT, GB 20517."""

from __future__ import annotations

from pathlib import Path

from devices.base import JSON_CODEC, DeviceKind
from devices.smoke.model import FIELDS, SmokeReading
from devices.smoke.simulate import SmokeSimulator

KIND = DeviceKind(
    name="smoke",
    title_zh="独立式光电感烟火灾探测报警器",
    title_en="Independent photoelectric smoke alarm",
    model=SmokeReading,
    fields=FIELDS,
    heartbeat_s=43_200,
    simulator=SmokeSimulator,
    folder=Path(__file__).parent,
    codecs={"json": JSON_CODEC},
)

__all__ = ["KIND"]
