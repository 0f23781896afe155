"""Unit tests of the smoke and throw_camera payload models and simulators."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from devices.base import DecodeError, Reading
from devices.smoke import KIND as SMOKE
from devices.smoke.model import SmokeReading
from devices.throw_camera import KIND as CAMERA
from devices.throw_camera.model import ThrowCameraReading

THROW: dict[str, Any] = {"event": "throw", "floor_estimate": 5, "confidence": 0.8}
T0 = 1_700_000_000.0


def smoke(**fields: Any) -> SmokeReading:
    reading = SMOKE.validate({"state": "normal", **fields}, {})
    assert isinstance(reading, SmokeReading)
    return reading


def camera(**fields: Any) -> ThrowCameraReading:
    reading = CAMERA.validate({**THROW, **fields}, {})
    assert isinstance(reading, ThrowCameraReading)
    return reading


def reason_of(kind_validate: Any, raw: dict[str, Any]) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        kind_validate(raw, {})
    return caught.value


# -- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected_ns"),
    [
        (1_732_780_800_000, 1_732_780_800_000_000_000),
        (1_732_780_800_000.0, 1_732_780_800_000_000_000),
        ("2024-11-28T08:00:00Z", 1_732_780_800_000_000_000),
        ("2024-11-28T16:00:00+08:00", 1_732_780_800_000_000_000),
        ("2024-11-28T08:00:00.250+00:00", 1_732_780_800_250_000_000),
        (None, None),
    ],
)
def test_ts_forms_are_normalised_to_epoch_ns(ts: Any, expected_ns: int | None) -> None:
    assert smoke(ts=ts).ts == expected_ns
    assert camera(ts=ts).ts == expected_ns


@pytest.mark.parametrize(
    "ts", ["2024-11-28T08:00:00", "yesterday", True, False, [1_732_780_800_000], float("nan")]
)
def test_bad_ts_is_rejected(ts: Any) -> None:
    assert reason_of(SMOKE.validate, {"state": "normal", "ts": ts}).reason == "invalid_value"


@pytest.mark.parametrize(
    ("ts", "reason", "hint"),
    [
        (1_732_780_800, "stale_ts", "seconds instead of milliseconds"),
        (1_732_780_800.5, "stale_ts", "seconds instead of milliseconds"),
        (946_684_799_999, "stale_ts", "before 2000"),
        (0, "stale_ts", "before 2000"),
        (-1, "stale_ts", "before 2000"),
        ("1999-12-31T23:59:59Z", "stale_ts", "before 2000"),
        (4_102_444_800_000, "future_ts", "after 2100"),
        (1_732_780_800_000_000, "future_ts", "micro- or nanoseconds"),
        (1_732_780_800_000_000_000, "future_ts", "micro- or nanoseconds"),
        (float("inf"), "future_ts", "after 2100"),
        ("2100-01-01T00:00:00Z", "future_ts", "after 2100"),
    ],
)
def test_ts_outside_2000_to_2100_is_stale_or_future(ts: Any, reason: str, hint: str) -> None:
    # The model knows no clock: the gateway narrows this window around its own (pipeline).
    error = reason_of(SMOKE.validate, {"state": "normal", "ts": ts})
    assert (error.reason, hint in error.detail) == (reason, True), error.detail


# -- smoke --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("smoke", 0, None),
        ("smoke", 2.0, None),
        ("smoke", -0.001, "out_of_range"),
        ("smoke", 2.001, "out_of_range"),
        ("temperature", -20, None),
        ("temperature", 85, None),
        ("temperature", -20.1, "out_of_range"),
        ("temperature", 85.1, "out_of_range"),
        ("battery", 0, None),
        ("battery", 100.5, "out_of_range"),
        ("rsrp", -44, None),
        ("rsrp", -43.9, "out_of_range"),
        ("state", "silenced", None),
        ("state", "low_battery", None),
        ("state", "ALARM", "wrong_type"),
        ("event", "self_test", None),
        ("event", "fire", "wrong_type"),
        ("smoke", "0.1", "wrong_type"),  # a number is a JSON number, never read from text
        ("smoke", True, "wrong_type"),  # nor a boolean (lax pydantic would read 1.0)
        ("seq", 1.0, "wrong_type"),  # an integer is a JSON integer
        ("seq", True, "wrong_type"),
        ("smoke", "a lot", "wrong_type"),
        ("humidity", 40, "unknown_field"),
    ],
)
def test_smoke_fields(field: str, value: Any, reason: str | None) -> None:
    raw = {"state": "normal", field: value}
    if reason is None:
        assert getattr(SMOKE.validate(raw, {}), field) is not None
    else:
        assert reason_of(SMOKE.validate, raw).reason == reason


def test_smoke_state_is_required() -> None:
    error = reason_of(SMOKE.validate, {"smoke": 0.01})
    assert error.reason == "missing_field"
    assert "state" in error.detail


def test_readings_are_frozen() -> None:
    reading: Reading = smoke(smoke=0.01)
    with pytest.raises(ValidationError):
        reading.smoke = 0.5  # type: ignore[attr-defined]


# -- throw_camera: floor range ------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "low", "high"),
    [
        ({"floor_range": [4, 6]}, 4, 6),
        ({"floor_range": [5, 5]}, 5, 5),
        ({"floor_range": (1, 100)}, 1, 100),
        ({"floor_range": None}, None, None),
        ({"floor_low": 3, "floor_high": 7}, 3, 7),
        ({"floor_low": 3}, 3, None),
        ({}, None, None),
    ],
)
def test_floor_range_forms(extra: dict[str, Any], low: int | None, high: int | None) -> None:
    reading = camera(**extra)
    assert (reading.floor_low, reading.floor_high) == (low, high)


@pytest.mark.parametrize(
    ("extra", "reason", "words"),
    [
        ({"floor_range": [7, 3]}, "invalid_value", "low 7 is above high 3"),
        ({"floor_low": 7, "floor_high": 3}, "invalid_value", "low 7 is above high 3"),
        ({"floor_range": [4, 5, 6]}, "invalid_value", "[low, high]"),
        ({"floor_range": [4]}, "invalid_value", "[low, high]"),
        ({"floor_range": "4-6"}, "invalid_value", "[low, high]"),
        ({"floor_range": [4, 6], "floor_high": 6}, "invalid_value", "not both"),
        ({"floor_range": [0, 6]}, "out_of_range", "floor_low"),
        ({"floor_range": [4, 101]}, "out_of_range", "floor_high"),
        ({"floor_range": [4.5, 6]}, "wrong_type", "floor_low"),
        ({"floor_estimate": 0}, "out_of_range", "floor_estimate"),
        ({"floor_estimate": 101}, "out_of_range", "floor_estimate"),
    ],
)
def test_bad_floors_are_explained(extra: dict[str, Any], reason: str, words: str) -> None:
    error = reason_of(CAMERA.validate, {**THROW, **extra})
    assert error.reason == reason
    assert words in error.detail


# -- throw_camera: what a throw needs -----------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "missing"),
    [
        ({"event": "throw"}, "floor_estimate and confidence"),
        ({"event": "throw", "confidence": 0.9}, "floor_estimate"),
        ({"event": "throw", "floor_estimate": 4, "floor_range": [3, 5]}, "confidence"),
    ],
)
def test_throw_needs_floor_and_confidence(raw: dict[str, Any], missing: str) -> None:
    error = reason_of(CAMERA.validate, raw)
    assert error.reason == "missing_field"
    assert f"a throw event needs {missing}" in error.detail


@pytest.mark.parametrize("event", ["occlusion", "offline", "online", "heartbeat"])
def test_other_events_need_no_floor(event: str) -> None:
    assert CAMERA.validate({"event": event}, {}).model_dump()["event"] == event


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("confidence", 0, None),
        ("confidence", 1, None),
        ("confidence", 1.01, "out_of_range"),
        ("confidence", -0.01, "out_of_range"),
        ("object_size", "large", None),
        ("object_size", "huge", "wrong_type"),
        ("snapshot_url", "http://nvr.local/" + "x" * 495, None),
        ("snapshot_url", "http://nvr.local/" + "x" * 496, "out_of_range"),
        ("clip_url", 42, "wrong_type"),
        ("facade", "", "out_of_range"),
        ("trajectory_points", 3, "unknown_field"),
    ],
)
def test_camera_fields(field: str, value: Any, reason: str | None) -> None:
    raw = {**THROW, field: value}
    if reason is None:
        assert getattr(CAMERA.validate(raw, {}), field) == value
    else:
        assert reason_of(CAMERA.validate, raw).reason == reason


# -- throw_camera: trajectory -------------------------------------------------------------


@pytest.mark.parametrize(
    ("trajectory", "points"),
    [
        (None, None),
        ([], 0),
        ([[0, 10.0, 20.0], [40, 11, 25.5]], 2),
        ([[i * 40, 100.0, float(i)] for i in range(500)], 500),
    ],
)
def test_trajectory_count_is_the_written_field(trajectory: Any, points: int | None) -> None:
    reading = camera(trajectory=trajectory)
    assert reading.trajectory_points == points
    assert reading.model_dump()["trajectory_points"] == points


@pytest.mark.parametrize(
    ("trajectory", "reason", "words"),
    [
        ([[0, 1.0, 2.0]] * 501, "out_of_range", "at most 500"),
        ([[0, 1.0, 2.0], [40, 1.0]], "invalid_value", "trajectory point 1"),
        ([[0, 1.0, 2.0, 3.0]], "invalid_value", "trajectory point 0"),
        ([5], "invalid_value", "trajectory point 0"),
        ([[-1, 1.0, 2.0]], "out_of_range", "trajectory.0.0"),
        ([[0, 1.0, -2.0]], "out_of_range", "trajectory.0.2"),
        ([[0, "left", 2.0]], "wrong_type", "trajectory.0.1"),
        ([[True, 1.0, 2.0]], "wrong_type", "trajectory.0.0"),
        ([[0, "1.0", 2.0]], "wrong_type", "trajectory.0.1"),
        ([[0, 1.0, False]], "wrong_type", "trajectory.0.2"),
        ("0,1,2", "wrong_type", "trajectory"),
    ],
)
def test_bad_trajectories_are_explained(trajectory: Any, reason: str, words: str) -> None:
    error = reason_of(CAMERA.validate, {**THROW, "trajectory": trajectory})
    assert error.reason == reason
    assert words in error.detail


# -- simulators ---------------------------------------------------------------------------


def _payloads(messages: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(m.payload) for m in messages]


def test_smoke_fire_rises_then_clears() -> None:
    sim = SMOKE.simulator("smoke-1", SMOKE.codecs["json"], {}, random.Random(3), 43_200)
    first = _payloads(sim.start_incident("fire", T0))
    later = _payloads([m for t in range(10, 3600, 10) for m in sim.step(T0 + t)])
    assert first[0]["event"] == "alarm_raised" and first[0]["state"] == "alarm"
    levels = [p["smoke"] for p in later if p["state"] == "alarm"]
    assert levels == sorted(levels) and levels[-1] == 0.6
    assert later[-1]["event"] == "alarm_cleared" and later[-1]["state"] == "normal"


def test_smoke_first_heartbeat_falls_in_the_first_interval() -> None:
    phases = set()
    for seed in range(5):
        sim = SMOKE.simulator("smoke-1", SMOKE.codecs["json"], {}, random.Random(seed), 43_200)
        sim.step(T0)
        sent = [(t, m) for t in range(0, 43_201, 600) for m in sim.step(T0 + t)]
        assert len(sent) == 1
        phases.add(_payloads([sent[0][1]])[0]["ts"])
    assert len(phases) == 5, "a fleet must not report in step"


@pytest.mark.parametrize("floors", ["1", "6", "33", "100"])
def test_throw_floors_fit_the_building(floors: str) -> None:
    params = {"floors": floors, "facade": "b7-east"}
    for seed in range(20):
        sim = CAMERA.simulator("cam-7", CAMERA.codecs["json"], params, random.Random(seed), 300)
        (payload,) = _payloads(sim.start_incident("throw", T0))
        low, high = payload["floor_range"]
        assert 1 <= low <= payload["floor_estimate"] <= high <= int(floors)
        assert 0.6 <= payload["confidence"] <= 0.99
        assert payload["snapshot_url"] == f"http://nvr.local/snap/cam-7/{payload['seq']}.jpg"
        assert payload["facade"] == "b7-east"


@pytest.mark.parametrize("kind", [SMOKE, CAMERA], ids=lambda k: k.name)
def test_unknown_incident_is_refused(kind: Any) -> None:
    sim = kind.simulator("dev-1", kind.codecs["json"], {}, random.Random(1), kind.heartbeat_s)
    with pytest.raises(ValueError, match="no incident 'flood'"):
        sim.start_incident("flood", T0)


def test_camera_floors_param_must_be_a_number() -> None:
    with pytest.raises(ValueError, match="floors must be an integer"):
        CAMERA.simulator("c", CAMERA.codecs["json"], {"floors": "tall"}, random.Random(1), 300)
