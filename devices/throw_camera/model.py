"""Payload model and field table of the high-altitude throwing detection camera (高空抛物)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, Strict, computed_field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from devices.base import COMMON_FIELDS, FieldSpec, Reading, bounded

CameraEvent = Literal["throw", "occlusion", "offline", "online", "heartbeat"]
ObjectSize = Literal["small", "medium", "large"]

EVENTS: tuple[str, ...] = get_args(CameraEvent)
OBJECT_SIZES: tuple[str, ...] = get_args(ObjectSize)

MAX_FLOOR = 100
MAX_TRAJECTORY_POINTS = 500
MAX_URL_CHARS = 512

#: The field table: the model's ranges come from here.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("event", "str", "", None, None, "analytics or camera health event", EVENTS),
    FieldSpec("facade", "str", "", None, None, "building facade the camera watches"),
    FieldSpec("floor_estimate", "int", "floor", 1, MAX_FLOOR, "estimated floor of origin"),
    FieldSpec("floor_low", "int", "floor", 1, MAX_FLOOR, "lowest likely floor of origin"),
    FieldSpec("floor_high", "int", "floor", 1, MAX_FLOOR, "highest likely floor of origin"),
    FieldSpec("confidence", "float", "", 0, 1, "analytics confidence"),
    FieldSpec("object_size", "str", "", None, None, "estimated object size", OBJECT_SIZES),
    FieldSpec("trajectory_points", "int", "", 0, MAX_TRAJECTORY_POINTS, "track length"),
    FieldSpec("snapshot_url", "str", "", None, None, "evidence snapshot in the video platform"),
    FieldSpec("clip_url", "str", "", None, None, "evidence video clip in the video platform"),
    *COMMON_FIELDS,
)

#: One track point: milliseconds since the track started, then image x and y in pixels.
#: Readings are strict (``Reading``); the tuples alone are not, so that the list a JSON array
#: decodes to is taken as a tuple on the regular path too. Their items stay strict numbers.
TrajectoryPoint = Annotated[
    tuple[
        Annotated[int, Field(ge=0), Strict()],
        Annotated[float, Field(ge=0), Strict()],
        Annotated[float, Field(ge=0), Strict()],
    ],
    Strict(False),
]


class ThrowCameraReading(Reading):
    """One camera message: an analytics event (throw, occlusion) or a health event.

    The wire form ``floor_range: [low, high]`` is accepted and stored as ``floor_low`` and
    ``floor_high``; ``trajectory`` is kept on the model but only its length is written.
    """

    event: CameraEvent
    facade: str | None = Field(default=None, min_length=1, max_length=64)
    floor_estimate: int | None = bounded(FIELDS, "floor_estimate")
    floor_low: int | None = bounded(FIELDS, "floor_low")
    floor_high: int | None = bounded(FIELDS, "floor_high")
    confidence: float | None = bounded(FIELDS, "confidence")
    object_size: ObjectSize | None = None
    trajectory: Annotated[tuple[TrajectoryPoint, ...], Strict(False)] | None = Field(
        default=None, max_length=MAX_TRAJECTORY_POINTS
    )
    snapshot_url: str | None = Field(default=None, max_length=MAX_URL_CHARS)
    clip_url: str | None = Field(default=None, max_length=MAX_URL_CHARS)

    @model_validator(mode="before")
    @classmethod
    def _split_floor_range(cls, data: Any) -> Any:
        """Map the vendor form ``floor_range: [low, high]`` onto ``floor_low``/``floor_high``."""
        if not isinstance(data, dict) or "floor_range" not in data:
            return data
        if "floor_low" in data or "floor_high" in data:
            raise ValueError("give either floor_range or floor_low/floor_high, not both")
        rest = dict(data)
        pair = rest.pop("floor_range")
        if pair is None:
            return rest
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ValueError(f"floor_range must be [low, high], got {pair!r:.60}")
        rest["floor_low"], rest["floor_high"] = pair
        return rest

    @field_validator("trajectory", mode="before")
    @classmethod
    def _check_points(cls, value: Any) -> Any:
        """Name the bad point, instead of pydantic's generic tuple message."""
        if isinstance(value, list | tuple):
            for index, point in enumerate(value):
                if not isinstance(point, list | tuple) or len(point) != 3:
                    raise ValueError(f"trajectory point {index} must be [t_ms, x, y]")
        return value

    @model_validator(mode="after")
    def _check_event(self) -> ThrowCameraReading:
        """A throw needs a floor and a confidence; a floor range must not be reversed."""
        if (
            self.floor_low is not None
            and self.floor_high is not None
            and self.floor_low > self.floor_high
        ):
            raise ValueError(f"floor range low {self.floor_low} is above high {self.floor_high}")
        if self.event == "throw":
            missing = [
                key for key in ("floor_estimate", "confidence") if getattr(self, key) is None
            ]
            if missing:
                # Reported as "missing" so the gateway counts it as missing_field.
                raise PydanticCustomError(
                    "missing",
                    "a throw event needs {missing}",
                    {"missing": " and ".join(missing)},
                )
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def trajectory_points(self) -> int | None:
        """How many track points came with the event (the track itself is not stored)."""
        return None if self.trajectory is None else len(self.trajectory)


#: Model fields kept on the reading but not written to InfluxDB.
NOT_WRITTEN: frozenset[str] = frozenset({"trajectory"})
