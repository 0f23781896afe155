"""Payload model and field table of the independent photoelectric smoke alarm (烟感)."""

from __future__ import annotations

from typing import Literal, get_args

from devices.base import COMMON_FIELDS, FieldSpec, Reading, bounded

SmokeState = Literal["normal", "alarm", "silenced", "fault", "tamper", "test", "low_battery"]
SmokeEvent = Literal["alarm_raised", "alarm_cleared", "silenced", "tamper", "fault", "self_test"]

STATES: tuple[str, ...] = get_args(SmokeState)
EVENTS: tuple[str, ...] = get_args(SmokeEvent)

#: Obscuration at which typical GB 20517 alarms trigger (dB/m); rules use it as default.
ALARM_SMOKE_DB_M = 0.15


#: The field table: the model's ranges come from here.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("state", "str", "", None, None, "device state machine", STATES),
    FieldSpec("smoke", "float", "dB/m", 0, 2.0, "optical obscuration in the smoke chamber"),
    FieldSpec("temperature", "float", "°C", -20, 85, "heat element; ≥ 57 °C is a heat alarm"),
    FieldSpec("event", "str", "", None, None, "what just happened (event messages)", EVENTS),
    *COMMON_FIELDS,
)


class SmokeReading(Reading):
    """One message of a smoke alarm: its state, the chamber reading and an optional event."""

    state: SmokeState
    smoke: float | None = bounded(FIELDS, "smoke")
    temperature: float | None = bounded(FIELDS, "temperature")
    event: SmokeEvent | None = None


#: Model fields deliberately not written to InfluxDB (none for this kind).
NOT_WRITTEN: frozenset[str] = frozenset()
