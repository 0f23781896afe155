"""The receive path's PUBLISH parser, fed the way TCP delivers: in arbitrary pieces."""

from __future__ import annotations

import asyncio
import random
import struct

from gateway.sources.mqtt import wire
from gateway.sources.mqtt.large import LargeMessage
from gateway.sources.mqtt.protocol import Connection


class _Sink:
    """Stands in for MqttSource: records what the parser hands over."""

    stream_above = 1 << 20
    max_payload = 1 << 20

    def __init__(self) -> None:
        self.got: list[tuple[bytes, bytes, int]] = []
        self.flagged: list[tuple[int, bytes, bytes, int]] = []
        self.large: list[LargeMessage] = []
        self.counted = 0

    def _on_publish(self, topic: bytes, payload: bytes, mid: int) -> None:
        self.got.append((topic, payload, mid))

    def _on_flagged(self, first: int, topic: bytes, payload: bytes, mid: int) -> None:
        self.flagged.append((first, topic, payload, mid))

    def _on_large(self, message: LargeMessage) -> None:
        self.large.append(message)

    def _on_puback(self, body: bytes) -> None:
        pass

    def _on_disconnect(self, reason: int) -> None:
        pass

    def _count_bytes(self, count: int) -> None:
        self.counted += count


def _publish(topic: bytes, payload: bytes, mid: int, props: bytes = b"") -> bytes:
    """An MQTT 5 PUBLISH, QoS 1 when ``mid`` is set (else QoS 0)."""
    header = struct.pack(">H", len(topic)) + topic
    if mid:
        header += struct.pack(">H", mid)
    body = header + wire.encode_varint(len(props)) + props + payload
    first = 0x32 if mid else 0x30
    return bytes([first]) + wire.encode_varint(len(body)) + body


def _messages(rng: random.Random) -> list[tuple[bytes, bytes, int, bytes]]:
    out = []
    for n in range(300):
        size = rng.choice((0, 5, 90, 120, 200, 3000, 16_400, 70_000))  # 1-, 2- and 3-byte lengths
        props = rng.choice((b"", b"", b"\x01\x01", b"\x23\x00\x07"))  # none, format, alias
        mid = rng.choice((0, n % 65535 + 1))
        out.append((f"scc/v1/d-{n}/telemetry".encode(), rng.randbytes(size), mid, props))
    return out


def test_publishes_split_anywhere_come_out_whole_and_in_order() -> None:
    async def run() -> None:
        for seed in range(5):
            rng = random.Random(seed)
            messages = _messages(rng)
            stream = b"".join(_publish(t, p, m, props) for t, p, m, props in messages)
            sink = _Sink()
            proto = Connection(sink)
            pos = 0
            for _ in range(len(stream)):
                if pos >= len(stream):
                    break
                step = rng.choice((1, 2, 3, 7, 150, 4096, 100_000))
                proto.data_received(stream[pos : pos + step])
                pos += step
            assert sink.got == [(t, p, m) for t, p, m, _ in messages]
            assert not proto.buf

    asyncio.run(run())


def test_a_truncated_packet_waits_for_the_rest() -> None:
    async def run() -> None:
        packet = _publish(b"scc/v1/d/telemetry", b"x" * 200, 7)
        sink = _Sink()
        proto = Connection(sink)
        proto.data_received(packet[:2])  # first byte of a two-byte remaining length
        proto.data_received(packet[2:-1])
        assert sink.got == []
        proto.data_received(packet[-1:])
        assert sink.got == [(b"scc/v1/d/telemetry", b"x" * 200, 7)]

    asyncio.run(run())
