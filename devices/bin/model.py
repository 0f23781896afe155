"""Payload model and field table of the ultrasonic bin fill-level sensor."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import model_validator
from pydantic_core import PydanticCustomError

from devices.base import COMMON_FIELDS, FieldSpec, Reading, bounded

Position = Literal["normal", "tilt"]
BinEvent = Literal["emptied", "overflow", "fire", "tilt"]

POSITIONS: tuple[str, ...] = ("normal", "tilt")
EVENTS: tuple[str, ...] = ("emptied", "overflow", "fire", "tilt")

#: Model limit of the EM310-UDL ultrasonic range, in millimetres.
MAX_DISTANCE_MM = 4500

#: The field table: the model's ranges come from here.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("distance", "int", "mm", 0, MAX_DISTANCE_MM, "lid to waste surface"),
    FieldSpec("fill", "float", "%", 0, 100, "100 × (depth − distance) / depth, clamped"),
    FieldSpec("temperature", "float", "°C", -30, 85, "inside the bin; a sharp rise means fire"),
    FieldSpec("position", "str", "", None, None, "bin knocked over or lid open", POSITIONS),
    FieldSpec("event", "str", "", None, None, "what an event message reports", EVENTS),
    *COMMON_FIELDS,
)


class BinReading(Reading):
    """One bin report: distance to the waste and/or fill %, temperature, position.

    Telemetry must carry ``distance`` or ``fill`` (fill is derived from distance and the
    bin's ``depth_mm`` install parameter); an event message (``event`` set) need not.
    """

    distance: int | None = bounded(FIELDS, "distance")
    fill: float | None = bounded(FIELDS, "fill")
    temperature: float | None = bounded(FIELDS, "temperature")
    position: Position | None = None
    event: BinEvent | None = None

    @model_validator(mode="after")
    def _has_level(self) -> Self:
        if self.event is None and self.distance is None and self.fill is None:
            # Error type "missing" so the gateway counts it as missing_field.
            raise PydanticCustomError(
                "missing", "bin telemetry needs distance (mm) or fill (%), found neither"
            )
        return self


def depth_mm(params: Mapping[str, str]) -> float | None:
    """The bin's inside depth from the ``depth_mm`` install parameter; None if unusable."""
    try:
        depth = float(params.get("depth_mm", ""))
    except (TypeError, ValueError, OverflowError):
        return None
    return depth if 0 < depth < math.inf else None


def derive_fill(raw: dict[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
    """Add ``fill`` % = 100 × (depth − distance) / depth, clamped to 0..100.

    Only when ``fill`` is absent, ``distance`` is a number within the sensor range and the
    ``depth_mm`` parameter is known. Never raises and never mutates ``raw``: otherwise
    ``raw`` is returned as is and validation reports any problem.
    """
    if raw.get("fill") is not None:
        return raw
    distance = raw.get("distance")
    # Range comparisons are safe for huge ints and false for NaN, so no conversion can raise.
    if isinstance(distance, bool) or not isinstance(distance, int | float):
        return raw
    if not 0 <= distance <= MAX_DISTANCE_MM:
        return raw
    depth = depth_mm(params)
    if depth is None:
        return raw
    fill = 100 * (depth - distance) / depth
    return {**raw, "fill": round(min(100.0, max(0.0, fill)), 1)}
