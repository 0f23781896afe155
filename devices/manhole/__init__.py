"""manhole — smart manhole cover sensor (智能井盖), e.g. Milesight EM310-TILT."""

from __future__ import annotations

from pathlib import Path

from devices.base import JSON_CODEC, DeviceKind
from devices.manhole.codec import EM310_TILT
from devices.manhole.model import FIELDS, ManholeReading, derive_manhole
from devices.manhole.simulate import ManholeSimulator

KIND = DeviceKind(
    name="manhole",
    title_zh="智能井盖",
    title_en="Manhole cover",
    model=ManholeReading,
    fields=FIELDS,
    heartbeat_s=21600,
    simulator=ManholeSimulator,
    folder=Path(__file__).parent,
    codecs={"json": JSON_CODEC, EM310_TILT.name: EM310_TILT},
    derive=derive_manhole,
)
