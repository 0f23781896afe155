"""PUBLISH packets too long to buffer: streamed, hashed, only a prefix kept
(gateway.sources.mqtt.large)."""

from __future__ import annotations

import asyncio
import hashlib
import random
import struct

import pytest

from gateway.sources.mqtt import wire
from gateway.sources.mqtt.large import (
    PREFIX_BYTES,
    LargeMessage,
    LargeReader,
    is_truncated,
    stream_threshold,
)
from gateway.sources.mqtt.protocol import Connection

MAX_PAYLOAD = 65_536


def _publish(topic: bytes, payload: bytes, mid: int, props: bytes = b"", flags: int = 0) -> bytes:
    header = struct.pack(">H", len(topic)) + topic + (struct.pack(">H", mid) if mid else b"")
    body = header + wire.encode_varint(len(props)) + props + payload
    first = (0x32 if mid else 0x30) | flags
    return bytes([first]) + wire.encode_varint(len(body)) + body


class _Sink:
    """Stands in for MqttSource; records what the connection hands over, in order."""

    max_payload = MAX_PAYLOAD
    stream_above = stream_threshold(MAX_PAYLOAD)

    def __init__(self) -> None:
        self.got: list[tuple[str, bytes, bytes | LargeMessage, int]] = []
        self.counted = 0

    def _on_publish(self, topic: bytes, payload: bytes, mid: int) -> None:
        self.got.append(("plain", topic, payload, mid))

    def _on_flagged(self, first: int, topic: bytes, payload: bytes, mid: int) -> None:
        self.got.append(("flagged", topic, payload, mid))

    def _on_large(self, message: LargeMessage) -> None:
        self.got.append(("large", message.topic, message, message.mid))

    def _on_puback(self, body: bytes) -> None:
        pass

    def _on_disconnect(self, reason: int) -> None:
        pass

    def _count_bytes(self, count: int) -> None:
        self.counted += count


def _feed(packet: bytes, rng: random.Random) -> LargeReader:
    first, pos = packet[0], 1
    remaining, pos = wire.decode_varint(packet, pos) or (0, 0)
    reader = LargeReader(first, remaining, MAX_PAYLOAD)
    while pos < len(packet):
        step = rng.choice((1, 2, 5, 300, 65_536, 1 << 20))
        used = reader.feed(packet[pos : pos + step])
        assert used == min(step, len(packet) - pos)
        pos += used
    assert reader.done
    return reader


@pytest.mark.parametrize("size", [MAX_PAYLOAD + 1, 1 << 20, 3_000_017])
def test_oversized_payload_keeps_prefix_length_and_hash(size: int) -> None:
    rng = random.Random(size)
    payload = rng.randbytes(size)
    packet = _publish(b"scc/v1/smoke-1/telemetry", payload, 77, props=b"\x01\x01")
    message = _feed(packet, rng).message()
    assert message.oversized
    assert (message.topic, message.mid, message.length) == (b"scc/v1/smoke-1/telemetry", 77, size)
    assert message.payload == payload[:PREFIX_BYTES]
    assert message.sha256 == hashlib.sha256(payload).hexdigest()
    assert f"{size} bytes" in message.detail(MAX_PAYLOAD)
    assert message.sha256 in message.detail(MAX_PAYLOAD)


def test_a_normal_payload_behind_huge_properties_is_kept_whole() -> None:
    rng = random.Random(1)
    props = b"\x26\xff\xff" + b"k" * 0xFFFF + b"\x00\x01v"  # one user property, 64 KiB key
    props += props  # two of them: the packet is longer than the stream threshold
    payload = b'{"state":"normal"}'
    packet = _publish(b"scc/v1/smoke-1/telemetry", payload, 5, props=props, flags=0x08)
    assert len(packet) > stream_threshold(MAX_PAYLOAD)
    message = _feed(packet, rng).message()
    assert not message.oversized
    assert (message.payload, message.length, message.first & 0x08) == (payload, len(payload), 8)


def test_properties_longer_than_the_packet_are_a_protocol_error() -> None:
    topic = b"a/b"
    body = struct.pack(">H", len(topic)) + topic + struct.pack(">H", 1) + wire.encode_varint(10**6)
    reader = LargeReader(0x32, len(body) + 100, MAX_PAYLOAD)
    with pytest.raises(wire.ProtocolError, match="overrun"):
        reader.feed(body)


def test_a_packet_ending_inside_its_header_is_a_protocol_error() -> None:
    reader = LargeReader(0x32, 3, MAX_PAYLOAD)
    with pytest.raises(wire.ProtocolError, match="header"):
        reader.feed(b"\x00\x05a")


def test_connection_streams_big_packets_between_small_ones_with_bounded_buffer() -> None:
    """Big and small packets, split anywhere: all come out in order; the read buffer never
    holds more than a packet below the stream threshold."""

    async def run() -> None:
        for seed in range(3):
            rng = random.Random(seed)
            packets = []
            expected = []
            for n in range(40):
                topic = f"scc/v1/d-{n}/telemetry".encode()
                size = rng.choice((20, 3000, 70_000, 200_000, 2_500_000))
                payload = rng.randbytes(size)
                packets.append(_publish(topic, payload, n + 1, flags=rng.choice((0, 0, 1))))
                expected.append((topic, payload, n + 1))
            stream = b"".join(packets)
            sink = _Sink()
            proto = Connection(sink)
            pos, peak = 0, 0
            while pos < len(stream):
                step = rng.choice((1, 7, 4096, 65_536, 262_144, 3_000_000))
                proto.data_received(stream[pos : pos + step])
                peak = max(peak, len(proto.buf))
                pos += step
            assert peak <= sink.stream_above + 5 + 262_144
            assert [(t, m) for _, t, _, m in sink.got] == [(t, m) for t, _, m in expected]
            # Packets up to the threshold are buffered (the pipeline refuses a payload over
            # max_payload among them); longer ones are streamed.
            for (kind, _, got, _), (_, payload, _) in zip(sink.got, expected, strict=True):
                if len(payload) > sink.stream_above:
                    assert kind == "large" and isinstance(got, LargeMessage)
                    assert got.length == len(payload) and got.payload == payload[:PREFIX_BYTES]
                else:
                    assert got == payload
            assert not proto.buf and proto.large is None
            small = sum(len(p) for p, (_, pl, _) in zip(packets, expected, strict=True)
                        if len(pl) <= sink.stream_above)  # fmt: skip
            assert sink.counted == small  # streamed bytes are not held, so not counted

    asyncio.run(run())


def test_a_kept_prefix_is_marked_so_it_is_never_replayed_as_the_message() -> None:
    message = LargeMessage(0x32, b"a/b", 1, b"x" * PREFIX_BYTES, 10**7, "ab" * 32)
    assert is_truncated(message.detail(MAX_PAYLOAD))
    assert not is_truncated("70000 bytes, at most 65536")  # buffered: kept whole
