"""MQTT 5 packet encoding and parsing."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sources.mqtt import wire


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (268_435_455, b"\xff\xff\xff\x7f"),
    ],
)
def test_varint_spec_examples(value: int, encoded: bytes) -> None:
    assert wire.encode_varint(value) == encoded
    assert wire.decode_varint(encoded, 0) == (value, len(encoded))


def test_varint_incomplete_and_too_long() -> None:
    assert wire.decode_varint(b"\x80", 0) is None
    with pytest.raises(wire.ProtocolError):
        wire.decode_varint(b"\x80\x80\x80\x80\x01", 0)


@given(st.integers(0, 268_435_455))
def test_varint_round_trip(value: int) -> None:
    assert wire.decode_varint(wire.encode_varint(value), 0) == (
        value,
        len(wire.encode_varint(value)),
    )


def test_connect_packet_layout() -> None:
    packet = wire.connect_packet(
        wire.ConnectOptions(client_id="gw", username="u", password="p", receive_maximum=1000)
    )
    assert packet[0] == 0x10
    length, body = wire.decode_varint(packet, 1) or (0, 0)
    assert len(packet) - body == length
    assert packet[body : body + 6] == b"\x00\x04MQTT"
    assert packet[body + 6] == 5  # protocol level
    assert packet[body + 7] == 0xC0  # user name + password, clean start off
    assert b"\x21\x03\xe8" in packet  # receive maximum 1000
    assert packet.endswith(b"\x00\x02gw\x00\x01u\x00\x01p")


def test_subscribe_and_puback() -> None:
    assert wire.subscribe_packet(7, ["a/#"], 1) == b"\x82\x09\x00\x07\x00\x00\x03a/#\x01"
    assert wire.puback_packets([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"
    assert wire.puback_packets([]) == b""


def test_connack_and_suback() -> None:
    assert wire.parse_connack(b"\x01\x00\x00") == wire.Connack(True, 0)
    assert wire.parse_connack(b"\x00\x87\x00").reason_code == 0x87
    assert wire.parse_suback(b"\x00\x01\x00\x01\x80") == [1, 0x80]
    with pytest.raises(wire.ProtocolError):
        wire.parse_suback(b"\x00")


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="receive_maximum"):
        wire.ConnectOptions(client_id="x", receive_maximum=0)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_varint_decoder_never_crashes(data: bytes) -> None:
    with contextlib.suppress(wire.ProtocolError):
        wire.decode_varint(data, 0)


def test_publish_packet_layout() -> None:
    packet = wire.publish_packet("a/b", b"xy", 258)
    assert packet == b"\x32\x0a\x00\x03a/b\x01\x02\x00xy"
    assert wire.publish_packet("a/b", b"xy", 1, dup=True)[0] == 0x3A
    for bad in (0, 0x10000):
        with pytest.raises(ValueError, match="packet id"):
            wire.publish_packet("a", b"", bad)


@pytest.mark.parametrize(
    ("body", "expected"),
    [(b"\x01\x02", (258, 0)), (b"\x00\x07\x10", (7, 0x10)), (b"\x00\x07\x87\x00", (7, 0x87))],
)
def test_parse_puback(body: bytes, expected: tuple[int, int]) -> None:
    assert wire.parse_puback(body) == expected


def test_parse_puback_too_short() -> None:
    with pytest.raises(wire.ProtocolError):
        wire.parse_puback(b"\x01")


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        (b"", 65535),
        (b"\x21\x00\x14", 20),  # receive maximum alone
        (b"\x27\x00\x10\x00\x00\x21\x03\xe8", 1000),  # after maximum packet size
        (b"\x12\x00\x02id\x21\x00\x05", 5),  # after an assigned client id (string)
        (b"\x26\x00\x01k\x00\x01v\x21\x00\x09", 9),  # after a user property (pair)
        (b"\x22\x00\x0a", 65535),  # topic alias maximum only
        (b"\x12\x00\x09id", 65535),  # truncated string: unknown, not an error
    ],
)
def test_connack_receive_maximum(props: bytes, expected: int) -> None:
    body = b"\x00\x00" + wire.encode_varint(len(props)) + props
    assert wire.parse_connack(body).receive_maximum == expected
