"""Property tests: whatever arrives, decoding and validation either succeed or raise DecodeError."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import load_kind
from devices.base import JSON_CODEC, DecodeError, DeviceKind
from devices.bin.codec import EM310_UDL
from devices.bin.model import derive_fill
from devices.manhole.codec import EM310_TILT
from devices.manhole.model import derive_tilt
from devices.milesight import DEVICE_INFO_RECORDS, MilesightCodec

FUZZ = settings(max_examples=300, deadline=None)
CODECS = [EM310_UDL, EM310_TILT]
KINDS = [load_kind("bin"), load_kind("manhole")]

#: Record headers the codecs know, so generated frames get past the first record.
HEADERS = [bytes.fromhex(h) for h in ("0175", "0382", "0400", "03cf")] + [
    bytes((r.channel, r.type)) for r in DEVICE_INFO_RECORDS
]

frames = st.one_of(
    st.binary(max_size=64),
    st.lists(st.tuples(st.sampled_from(HEADERS), st.binary(max_size=9)), max_size=6).map(
        lambda parts: b"".join(head + body for head, body in parts)
    ),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["normal", "tilt", "opened", "fire", "2026-11-28T10:00:00+08:00"]),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def field_names() -> list[str]:
    """Every field name the kinds know, plus the base model's own keys."""
    names = {spec.key for kind in KINDS for spec in kind.fields}
    return sorted(names | {"ts", "device_id", "distance", "angle_x", "angle_y", "fill", "tilt"})


raw_readings = st.dictionaries(
    st.one_of(st.sampled_from(field_names()), st.text(max_size=10)), json_values, max_size=8
)
install_params = st.dictionaries(
    st.sampled_from(["depth_mm", "depth_cm", "other"]),
    st.one_of(st.text(max_size=10), st.sampled_from(["2500", "0", "-1", "nan", "1e999", "inf"])),
    max_size=3,
)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
@FUZZ
@given(payload=frames)
def test_binary_codecs_return_readings_or_decode_error(
    codec: MilesightCodec, payload: bytes
) -> None:
    try:
        readings = codec.decode(payload)
    except DecodeError:
        return
    assert len(readings) == 1
    assert isinstance(readings[0], dict) and readings[0]


@FUZZ
@given(
    payload=st.one_of(st.binary(max_size=128), json_values.map(lambda v: json.dumps(v).encode()))
)
def test_json_codec_returns_objects_or_decode_error(payload: bytes) -> None:
    try:
        readings = JSON_CODEC.decode(payload)
    except DecodeError:
        return
    assert readings and all(isinstance(item, dict) for item in readings)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
@FUZZ
@given(raw=raw_readings, params=install_params)
def test_validate_raises_only_decode_error(
    kind: DeviceKind, raw: dict[str, Any], params: dict[str, str]
) -> None:
    with contextlib.suppress(DecodeError):
        kind.validate(raw, params)


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.name)
@FUZZ
@given(payload=frames, params=install_params)
def test_binary_frames_through_validation(
    kind: DeviceKind, payload: bytes, params: dict[str, str]
) -> None:
    codec = next(c for name, c in kind.codecs.items() if name != "json")
    with contextlib.suppress(DecodeError):
        for raw in codec.decode(payload):
            kind.validate(raw, params)


@FUZZ
@given(raw=raw_readings, params=install_params)
def test_derive_functions_never_raise_nor_mutate(
    raw: dict[str, Any], params: dict[str, str]
) -> None:
    before = dict(raw)
    for derive in (derive_fill, derive_tilt):
        derived = derive(raw, params)
        assert raw == before  # same value objects, so NaN compares equal by identity
        assert derived is raw or set(derived) - set(raw) <= {"fill", "tilt"}


@FUZZ
@given(
    battery=st.integers(0, 255),
    distance=st.integers(0, 65535),
    position=st.sampled_from(["normal", "tilt"]),
)
def test_udl_round_trip(battery: int, distance: int, position: str) -> None:
    reading = {"battery": battery, "distance": distance, "position": position}
    assert EM310_UDL.decode(EM310_UDL.encode(reading)) == [reading]


@FUZZ
@given(
    battery=st.integers(0, 255),
    centi=st.tuples(*[st.integers(-32768, 32767)] * 3),
    alarms=st.tuples(*[st.booleans()] * 3),
)
def test_tilt_round_trip(
    battery: int, centi: tuple[int, int, int], alarms: tuple[bool, bool, bool]
) -> None:
    reading: dict[str, Any] = {"battery": battery}
    for axis, value, alarm in zip("xyz", centi, alarms, strict=True):
        reading[f"angle_{axis}"] = value / 100
        reading[f"alarm_{axis}"] = alarm
    assert EM310_TILT.decode(EM310_TILT.encode(reading)) == [reading]
