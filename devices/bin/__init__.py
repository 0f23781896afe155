"""bin — ultrasonic bin fill-level sensor (垃圾满溢), e.g. Milesight EM310-UDL."""

from __future__ import annotations

from pathlib import Path

from devices.base import JSON_CODEC, DeviceKind
from devices.bin.codec import EM310_UDL
from devices.bin.model import FIELDS, BinReading, derive_fill
from devices.bin.simulate import BinSimulator

KIND = DeviceKind(
    name="bin",
    title_zh="垃圾桶满溢监测",
    title_en="Bin fill level",
    model=BinReading,
    fields=FIELDS,
    heartbeat_s=1800,
    simulator=BinSimulator,
    folder=Path(__file__).parent,
    codecs={"json": JSON_CODEC, EM310_UDL.name: EM310_UDL},
    derive=derive_fill,
)
