"""Codec for the Milesight EM310-TILT tilt sensor (manhole cover).

Records (little-endian): ``01 75`` battery u8 %; ``03 cf`` angles: x, y, z as int16 / 100
degrees, then one byte of threshold flags (bit 0 x, bit 1 y, bit 2 z; 1 = triggered), decoded
as ``alarm_x``, ``alarm_y``, ``alarm_z``. Device-information records are skipped (see
``devices.milesight``).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from devices.milesight import BATTERY_RECORD, MilesightCodec, Record, pack_int, read_i16

AXES: tuple[str, ...] = ("x", "y", "z")


def _read_angles(value: bytes) -> dict[str, Any]:
    reading: dict[str, Any] = {}
    for index, axis in enumerate(AXES):
        reading[f"angle_{axis}"] = read_i16(value, 2 * index) / 100
    flags = value[6]
    for bit, axis in enumerate(AXES):
        reading[f"alarm_{axis}"] = bool(flags >> bit & 1)
    return reading


def _write_angles(reading: Mapping[str, Any]) -> bytes | None:
    present = [reading.get(f"angle_{axis}") is not None for axis in AXES]
    if not any(present):
        return None
    if not all(present):
        raise ValueError("the angle record needs angle_x, angle_y and angle_z together")
    angles = b"".join(
        pack_int(reading[f"angle_{axis}"], f"angle_{axis}", "<h", scale=100) for axis in AXES
    )
    flags = sum(1 << bit for bit, axis in enumerate(AXES) if reading.get(f"alarm_{axis}"))
    return angles + struct.pack("<B", flags)


RECORDS: tuple[Record, ...] = (
    BATTERY_RECORD,
    Record(0x03, 0xCF, 7, "angles and threshold flags", read=_read_angles, write=_write_angles),
)

EM310_TILT = MilesightCodec("em310-tilt", RECORDS)
