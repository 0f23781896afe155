"""Payload model and field table of the smart manhole cover sensor."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Self, TypeGuard

from pydantic import model_validator
from pydantic_core import PydanticCustomError

from devices.base import COMMON_FIELDS, FieldSpec, Reading, bounded

CoverState = Literal["normal", "tilted", "opened", "displaced"]
ManholeEvent = Literal["opened", "tilted", "displaced", "flood", "gas", "vibration"]

STATES: tuple[str, ...] = ("normal", "tilted", "opened", "displaced")
EVENTS: tuple[str, ...] = ("opened", "tilted", "displaced", "flood", "gas", "vibration")

#: Deepest well the water sensor covers (the water_level range), in centimetres.
MAX_DEPTH_CM = 500

#: Fields of which a message must carry at least one to be worth storing.
MEASUREMENTS: tuple[str, ...] = (
    "angle_x",
    "angle_y",
    "angle_z",
    "tilt",
    "state",
    "water_level",
    "water_gap",
    "ch4",
    "h2s",
    "vibration",
    "battery",
    "event",
)

#: Angles are degrees from the installed position, -180..180 (tilt 0..180).
MAX_ANGLE = 180

#: The field table: the model's ranges come from here.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("angle_x", "float", "°", -MAX_ANGLE, MAX_ANGLE, "rotation about the device x axis"),
    FieldSpec("angle_y", "float", "°", -MAX_ANGLE, MAX_ANGLE, "rotation about the device y axis"),
    FieldSpec("angle_z", "float", "°", -MAX_ANGLE, MAX_ANGLE, "rotation about the device z axis"),
    FieldSpec("tilt", "float", "°", 0, MAX_ANGLE, "overall tilt from the installed position"),
    FieldSpec("state", "str", "", None, None, "cover state", STATES),
    FieldSpec("water_level", "float", "cm", 0, MAX_DEPTH_CM, "water height above the well bottom"),
    FieldSpec(
        "water_gap",
        "float",
        "cm",
        -MAX_DEPTH_CM,
        MAX_DEPTH_CM,
        "cover to water surface, depth_cm − water_level; negative: water above the cover",
    ),
    FieldSpec("ch4", "float", "%LEL", 0, 100, "methane, share of the lower explosive limit"),
    FieldSpec("h2s", "float", "ppm", 0, 100, "hydrogen sulphide"),
    FieldSpec("vibration", "bool", "", None, None, "impact or traffic shock detected"),
    FieldSpec("alarm_x", "bool", "", None, None, "device x-angle threshold triggered"),
    FieldSpec("alarm_y", "bool", "", None, None, "device y-angle threshold triggered"),
    FieldSpec("alarm_z", "bool", "", None, None, "device z-angle threshold triggered"),
    FieldSpec("event", "str", "", None, None, "what an event message reports", EVENTS),
    *COMMON_FIELDS,
)


class ManholeReading(Reading):
    """One manhole cover report: angles, overall tilt, cover state, water and gas levels.

    Angles are relative to the installed (calibrated) position; ``tilt`` is derived from
    ``angle_x`` and ``angle_y`` when the device does not send it (see ``derive_tilt``), and
    ``water_gap`` from ``water_level`` and the ``depth_cm`` install parameter.
    """

    angle_x: float | None = bounded(FIELDS, "angle_x")
    angle_y: float | None = bounded(FIELDS, "angle_y")
    angle_z: float | None = bounded(FIELDS, "angle_z")
    tilt: float | None = bounded(FIELDS, "tilt")
    state: CoverState | None = None
    water_level: float | None = bounded(FIELDS, "water_level")
    water_gap: float | None = bounded(FIELDS, "water_gap")
    ch4: float | None = bounded(FIELDS, "ch4")
    h2s: float | None = bounded(FIELDS, "h2s")
    vibration: bool | None = None
    alarm_x: bool | None = None
    alarm_y: bool | None = None
    alarm_z: bool | None = None
    event: ManholeEvent | None = None

    @model_validator(mode="after")
    def _has_measurement(self) -> Self:
        if all(getattr(self, key) is None for key in MEASUREMENTS):
            # Error type "missing" so the gateway counts it as missing_field.
            raise PydanticCustomError(
                "missing", "manhole message carries no reading (angles, tilt, state, levels...)"
            )
        return self


def _is_number_in(value: object, low: float, high: float) -> TypeGuard[float]:
    # Range comparisons are safe for huge ints and false for NaN, so no conversion can raise.
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def depth_cm(params: Mapping[str, str]) -> float | None:
    """Well depth from cover to bottom (``depth_cm`` install parameter); None if unusable."""
    try:
        depth = float(params.get("depth_cm", ""))
    except (TypeError, ValueError, OverflowError):
        return None
    return depth if 0 < depth <= MAX_DEPTH_CM else None


def tilt_from_angles(angle_x: float, angle_y: float) -> float:
    """Angle in degrees between the device z axis and the vertical, 0..180.

    Rotating the device by ``angle_x`` about its x axis and then by ``angle_y`` about its
    y axis leaves its z axis with a vertical component of cos(angle_x) × cos(angle_y), so
    the tilt is acos(cos(angle_x) × cos(angle_y)). Rotation about z does not tilt the cover.
    """
    vertical = math.cos(math.radians(angle_x)) * math.cos(math.radians(angle_y))
    return round(math.degrees(math.acos(max(-1.0, min(1.0, vertical)))), 2)


def derive_tilt(raw: dict[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
    """Add ``tilt`` from ``angle_x``/``angle_y`` when the device did not send it.

    Never raises and never mutates ``raw``: when tilt is present or an angle is missing or
    unusable, ``raw`` is returned as is and validation reports any problem.
    """
    if raw.get("tilt") is not None:
        return raw
    angle_x, angle_y = raw.get("angle_x"), raw.get("angle_y")
    if not (
        _is_number_in(angle_x, -MAX_ANGLE, MAX_ANGLE)
        and _is_number_in(angle_y, -MAX_ANGLE, MAX_ANGLE)
    ):
        return raw
    return {**raw, "tilt": tilt_from_angles(angle_x, angle_y)}


def derive_water_gap(raw: dict[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
    """Add ``water_gap`` = depth_cm − water_level when absent and both are usable.

    The flood rule compares this gap, so one rule serves wells of every depth. Never raises
    and never mutates ``raw`` (same contract as ``derive_tilt``).
    """
    if raw.get("water_gap") is not None:
        return raw
    level = raw.get("water_level")
    depth = depth_cm(params)
    if depth is None or not _is_number_in(level, 0, MAX_DEPTH_CM):
        return raw
    return {**raw, "water_gap": round(depth - level, 1)}


def derive_manhole(raw: dict[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
    """The kind's derive step: ``tilt`` from the angles, ``water_gap`` from the depth."""
    return derive_water_gap(derive_tilt(raw, params), params)
