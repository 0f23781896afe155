"""Milesight channel/type codecs: EM310-UDL (bin) and EM310-TILT (manhole)."""

from __future__ import annotations

from typing import Any

import pytest

from devices.base import DecodeError
from devices.bin.codec import EM310_UDL
from devices.manhole.codec import EM310_TILT
from devices.milesight import BATTERY_RECORD, DEVICE_INFO_RECORDS, MilesightCodec, Record


def frame(text: str) -> bytes:
    """Hex text (spaces allowed) as bytes."""
    return bytes.fromhex(text)


def test_published_em310_udl_example() -> None:
    readings = EM310_UDL.decode(frame("01 75 5C 03 82 44 08 04 00 01"))
    assert readings == [{"battery": 92, "distance": 2116, "position": "tilt"}]


@pytest.mark.parametrize(
    ("codec", "hex_frame", "expected"),
    [
        (EM310_UDL, "01 75 00", {"battery": 0}),
        (EM310_UDL, "01 75 ff", {"battery": 255}),
        (EM310_UDL, "03 82 00 00", {"distance": 0}),
        (EM310_UDL, "03 82 ff ff", {"distance": 65535}),
        (EM310_UDL, "03 82 94 11", {"distance": 4500}),
        (EM310_UDL, "04 00 00", {"position": "normal"}),
        (EM310_UDL, "04 00 01", {"position": "tilt"}),
        (EM310_TILT, "01 75 64", {"battery": 100}),
        (
            EM310_TILT,
            "03 cf 34 00 e1 ff 78 00 00",
            {"angle_x": 0.52, "angle_y": -0.31, "angle_z": 1.2}
            | {"alarm_x": False, "alarm_y": False, "alarm_z": False},
        ),
        (
            EM310_TILT,
            "03 cf 00 80 ff 7f 00 00 07",
            {"angle_x": -327.68, "angle_y": 327.67, "angle_z": 0.0}
            | {"alarm_x": True, "alarm_y": True, "alarm_z": True},
        ),
        (
            EM310_TILT,
            "03 cf 50 46 b0 b9 00 00 01",
            {"angle_x": 180.0, "angle_y": -180.0, "angle_z": 0.0}
            | {"alarm_x": True, "alarm_y": False, "alarm_z": False},
        ),
    ],
)
def test_each_record(codec: MilesightCodec, hex_frame: str, expected: dict[str, Any]) -> None:
    assert codec.decode(frame(hex_frame)) == [expected]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (0x00, (False, False, False)),
        (0x01, (True, False, False)),
        (0x02, (False, True, False)),
        (0x04, (False, False, True)),
        (0xF8, (False, False, False)),  # reserved bits carry no axis
    ],
)
def test_tilt_threshold_flags(flags: int, expected: tuple[bool, bool, bool]) -> None:
    [reading] = EM310_TILT.decode(frame("03 cf 00 00 00 00 00 00") + bytes((flags,)))
    assert (reading["alarm_x"], reading["alarm_y"], reading["alarm_z"]) == expected


@pytest.mark.parametrize("codec", [EM310_UDL, EM310_TILT], ids=lambda c: c.name)
@pytest.mark.parametrize("info", DEVICE_INFO_RECORDS, ids=lambda r: r.label)
def test_device_info_records_are_skipped(codec: MilesightCodec, info: Record) -> None:
    skipped = bytes((info.channel, info.type)) + bytes(range(1, info.size + 1))
    measured = frame("01 75 5c")
    expected = [{"battery": 92}]
    assert codec.decode(skipped + measured) == expected
    assert codec.decode(measured + skipped) == expected


def test_vendor_join_frame_with_measurements() -> None:
    info = "ff 01 01 ff 09 01 40 ff 0a 01 14 ff 0b ff ff 0f 00 ff 16 67 46 c4 49 93 32 00 12"
    readings = EM310_UDL.decode(frame(info + " 01 75 64 03 82 e8 03 04 00 00"))
    assert readings == [{"battery": 100, "distance": 1000, "position": "normal"}]


# Record boundaries of the frames below: cutting there leaves a shorter, complete frame.
TRUNCATION_CASES = [
    (EM310_UDL, "ff 0b ff 01 75 5c 03 82 44 08 04 00 01", {0, 3, 6, 10, 13}),
    (EM310_TILT, "ff 0f 00 01 75 5c 03 cf 34 00 e1 ff 78 00 05", {0, 3, 6, 15}),
]


@pytest.mark.parametrize(("codec", "hex_frame", "boundaries"), TRUNCATION_CASES)
def test_truncated_at_every_byte(
    codec: MilesightCodec, hex_frame: str, boundaries: set[int]
) -> None:
    full = frame(hex_frame)
    for cut in range(len(full)):
        if cut in boundaries:
            continue
        with pytest.raises(DecodeError) as info:
            codec.decode(full[:cut])
        assert info.value.reason == "truncated", (cut, info.value)


@pytest.mark.parametrize(("codec", "hex_frame", "boundaries"), TRUNCATION_CASES)
def test_cut_at_record_boundary_is_a_shorter_frame(
    codec: MilesightCodec, hex_frame: str, boundaries: set[int]
) -> None:
    full = frame(hex_frame)
    expected = {0: "truncated", 3: "no_measurement"}
    for cut in sorted(boundaries):
        if cut in expected:
            with pytest.raises(DecodeError) as info:
                codec.decode(full[:cut])
            assert info.value.reason == expected[cut]
        else:
            [reading] = codec.decode(full[:cut])
            assert reading["battery"] == 92


@pytest.mark.parametrize(
    ("codec", "hex_frame", "detail"),
    [
        (EM310_UDL, "", "em310-udl: empty payload, expected records"),
        (EM310_UDL, "01 75 5c 03 82 44", "record 03 82 at offset 3 needs 2 bytes, 1 left"),
        (EM310_UDL, "01 75 5c 03", "record header at offset 3 needs 2 bytes, 1 left"),
        (EM310_UDL, "ff 16 01 02 03", "record ff 16 at offset 0 needs 8 bytes, 3 left"),
        (EM310_TILT, "03 cf 34 00 e1 ff 78 00", "record 03 cf at offset 0 needs 7 bytes, 6 left"),
    ],
)
def test_truncated_details(codec: MilesightCodec, hex_frame: str, detail: str) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(frame(hex_frame))
    assert (info.value.reason, info.value.detail) == ("truncated", detail)


@pytest.mark.parametrize(
    ("codec", "hex_frame", "detail"),
    [
        (EM310_UDL, "05 99 01 01 75 5c", "em310-udl: offset 0: channel 0x05 type 0x99"),
        (EM310_UDL, "ff 0b ff 05 99 01", "em310-udl: offset 3: channel 0x05 type 0x99"),
        # A TILT record means nothing to a UDL decoder, and the other way round.
        (EM310_UDL, "03 cf 00 00 00 00 00 00 00", "em310-udl: offset 0: channel 0x03 type 0xcf"),
        (EM310_TILT, "03 82 44 08", "em310-tilt: offset 0: channel 0x03 type 0x82"),
    ],
)
def test_unknown_record_before_any_measurement_rejects(
    codec: MilesightCodec, hex_frame: str, detail: str
) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(frame(hex_frame))
    assert (info.value.reason, info.value.detail) == ("unknown_record", detail)


@pytest.mark.parametrize(
    ("codec", "hex_frame", "expected"),
    [
        (EM310_UDL, "01 75 5c 03 82 44 08 05 99 01 02", {"battery": 92, "distance": 2116}),
        (EM310_TILT, "01 75 5c 0a 0b", {"battery": 92}),
    ],
)
def test_unknown_record_after_measurements_returns_them(
    codec: MilesightCodec, hex_frame: str, expected: dict[str, Any]
) -> None:
    assert codec.decode(frame(hex_frame)) == [expected]


@pytest.mark.parametrize("codec", [EM310_UDL, EM310_TILT], ids=lambda c: c.name)
def test_device_info_only_frame_has_no_measurement(codec: MilesightCodec) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(frame("ff 0b ff ff 01 01 ff 0f 00"))
    assert info.value.reason == "no_measurement"


def test_position_byte_outside_the_table_is_out_of_range() -> None:
    with pytest.raises(DecodeError) as info:
        EM310_UDL.decode(frame("01 75 5c 04 00 02"))
    assert info.value.reason == "out_of_range"
    assert info.value.detail == (
        "record 04 00 at offset 3: position byte 2 is neither 0 (normal) nor 1 (tilt)"
    )


@pytest.mark.parametrize(
    ("codec", "reading", "hex_frame"),
    [
        (EM310_UDL, {"battery": 92, "distance": 2116, "position": "tilt"}, "01755c03824408040001"),
        (EM310_UDL, {"distance": 0}, "03820000"),
        (EM310_UDL, {"battery": 80.4, "position": "normal"}, "017550040000"),
        (
            EM310_TILT,
            {"battery": 95, "angle_x": 0.52, "angle_y": -0.31, "angle_z": 1.2},
            "01755f03cf3400e1ff780000",
        ),
        (
            EM310_TILT,
            {"angle_x": -65, "angle_y": 2.5, "angle_z": 0.75, "alarm_x": True, "alarm_z": True},
            "03cf9ce6fa004b0005",
        ),
    ],
)
def test_encode(codec: MilesightCodec, reading: dict[str, Any], hex_frame: str) -> None:
    assert codec.encode(reading).hex() == hex_frame


@pytest.mark.parametrize(
    ("codec", "reading"),
    [
        (EM310_UDL, {"battery": 92, "distance": 2116, "position": "tilt"}),
        (EM310_UDL, {"battery": 0, "distance": 4500, "position": "normal"}),
        (EM310_UDL, {"distance": 65535}),
        (
            EM310_TILT,
            {"battery": 100, "angle_x": -180.0, "angle_y": 180.0, "angle_z": 0.01}
            | {"alarm_x": True, "alarm_y": False, "alarm_z": True},
        ),
        (
            EM310_TILT,
            {"angle_x": 12.34, "angle_y": -0.01, "angle_z": 89.99}
            | {"alarm_x": False, "alarm_y": False, "alarm_z": False},
        ),
    ],
)
def test_encode_decode_round_trip(codec: MilesightCodec, reading: dict[str, Any]) -> None:
    assert codec.decode(codec.encode(reading)) == [reading]


@pytest.mark.parametrize(
    ("codec", "reading", "expected"),
    [
        # Fields the device model cannot carry are left out, as a real device would.
        (EM310_UDL, {"distance": 800, "temperature": 71.5, "event": "fire"}, {"distance": 800}),
        (EM310_TILT, {"battery": 50, "water_level": 280.0, "state": "opened"}, {"battery": 50}),
        (EM310_TILT, {"battery": None, "distance": 5}, None),
    ],
)
def test_encode_leaves_out_what_the_model_cannot_send(
    codec: MilesightCodec, reading: dict[str, Any], expected: dict[str, Any] | None
) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="no field this model can send"):
            codec.encode(reading)
    else:
        assert codec.decode(codec.encode(reading)) == [expected]


@pytest.mark.parametrize(
    ("codec", "reading", "message"),
    [
        (EM310_UDL, {"battery": 256}, "battery 256 does not fit"),
        (EM310_UDL, {"battery": -1}, "battery -1 does not fit"),
        (EM310_UDL, {"battery": True}, "battery must be a number"),
        (EM310_UDL, {"distance": "far"}, "distance must be a number"),
        (EM310_UDL, {"distance": float("nan")}, "distance nan does not fit"),
        (EM310_UDL, {"position": "upside_down"}, "position must be one of"),
        (EM310_TILT, {"angle_x": 1.0, "angle_y": 2.0}, "needs angle_x, angle_y and angle_z"),
        (EM310_TILT, {"angle_x": 400, "angle_y": 0, "angle_z": 0}, "angle_x 400 does not fit"),
    ],
)
def test_encode_refuses_values_that_do_not_fit(
    codec: MilesightCodec, reading: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        codec.encode(reading)


def test_a_table_with_a_duplicate_pair_is_refused() -> None:
    version = Record(0xFF, 0x01, 1, "protocol version, read", read=lambda v: {"fw": str(v[0])})
    with pytest.raises(ValueError, match="share a channel/type pair"):
        MilesightCodec("broken", [BATTERY_RECORD, version])
