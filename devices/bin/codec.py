"""Codec for the Milesight EM310-UDL ultrasonic distance sensor (bin fill level).

Records (little-endian): ``01 75`` battery u8 %; ``03 82`` distance u16 mm; ``04 00``
position u8 (0 normal, 1 tilt). Device-information records are skipped (see
``devices.milesight``). The sensor has no thermometer: temperature comes from JSON models only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from devices.milesight import BATTERY_RECORD, MilesightCodec, Record, pack_int, read_u16

POSITIONS: tuple[str, ...] = ("normal", "tilt")


def _read_position(value: bytes) -> dict[str, Any]:
    code = value[0]
    if code >= len(POSITIONS):
        raise ValueError(f"position byte {code} is neither 0 (normal) nor 1 (tilt)")
    return {"position": POSITIONS[code]}


def _write_distance(reading: Mapping[str, Any]) -> bytes | None:
    value = reading.get("distance")
    return None if value is None else pack_int(value, "distance", "<H")


def _write_position(reading: Mapping[str, Any]) -> bytes | None:
    value = reading.get("position")
    if value is None:
        return None
    if value not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {value!r}")
    return bytes((POSITIONS.index(value),))


RECORDS: tuple[Record, ...] = (
    BATTERY_RECORD,
    Record(
        0x03,
        0x82,
        2,
        "distance",
        read=lambda v: {"distance": read_u16(v)},
        write=_write_distance,
    ),
    Record(0x04, 0x00, 1, "position", read=_read_position, write=_write_position),
)

EM310_UDL = MilesightCodec("em310-udl", RECORDS)
