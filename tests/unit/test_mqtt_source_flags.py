"""What the MQTT source makes of RETAIN, DUP and oversized deliveries, and its byte budget."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.sources.mqtt import wire
from gateway.sources.mqtt.protocol import Connection
from gateway.sources.mqtt.receipts import Receipts
from gateway.sources.mqtt.source import RECEIVE_STEP_NS, Batch, MqttSource, SourceOptions

TOPIC = b"scc/v1/smoke-1/telemetry"


class _Transport(asyncio.Transport):
    """Records what the source does to its connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.paused = False
        self.pauses = 0

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False


def _publish(payload: bytes, mid: int, flags: int = 0, topic: bytes = TOPIC) -> bytes:
    body = struct.pack(">H", len(topic)) + topic + struct.pack(">H", mid) + b"\x00" + payload
    return bytes([0x32 | flags]) + wire.encode_varint(len(body)) + body


def _connected(source: MqttSource) -> tuple[Connection, _Transport]:
    proto = Connection(source)
    transport = _Transport()
    proto.connection_made(transport)
    source._proto = proto
    return proto, transport


def _run(body: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(body())  # type: ignore[arg-type]


async def _batches(source: MqttSource) -> list[Batch]:
    out = []
    batch = await source.next_batch(timeout=1.0)
    while batch is not None:
        out.append(batch)
        batch = await source.next_batch(timeout=0.05)
    return out


def test_a_retained_delivery_is_refused_and_acknowledged_in_arrival_order() -> None:
    async def go() -> None:
        source = MqttSource(SourceOptions(linger_s=0.01))
        proto, _ = _connected(source)
        proto.data_received(
            _publish(b'{"state":"normal"}', 1)
            + _publish(b'{"state":"alarm"}', 2, flags=wire.PUBLISH_RETAIN)
            + _publish(b'{"state":"normal"}', 3)
        )
        (batch,) = await _batches(source)
        assert batch.payloads == [b'{"state":"normal"}'] * 2
        assert batch.mids == [1, 2, 3]  # PUBACKs go out in the order of the PUBLISHes
        (refused,) = batch.refused
        assert (refused.position, refused.reason, refused.payload) == (
            1, "retained", b'{"state":"alarm"}',
        )  # fmt: skip
        assert "retained store" in refused.detail
        assert source.refused["retained"] == 1

    _run(go)


def test_a_dup_delivery_gets_the_first_receive_time_back() -> None:
    async def go() -> None:
        receipts = Receipts(None, RECEIVE_STEP_NS)
        source = MqttSource(SourceOptions(linger_s=0.01), receipts=receipts)
        proto, _ = _connected(source)
        proto.data_received(_publish(b'{"state":"normal","n":1}', 10)
                            + _publish(b'{"state":"normal","n":2}', 11))  # fmt: skip
        (first,) = await _batches(source)
        proto.data_received(
            _publish(b'{"state":"normal","n":0}', 9)  # new
            + _publish(b'{"state":"normal","n":2}', 11, flags=wire.PUBLISH_DUP)  # known
            + _publish(b'{"state":"other"}', 10, flags=wire.PUBLISH_DUP)  # id known, not it
        )
        (second,) = await _batches(source)
        assert second.fixed_ts == {1: first.received_ns + RECEIVE_STEP_NS}
        assert second.mids == [9, 11, 10]

    _run(go)


def test_an_oversized_message_is_refused_with_prefix_and_hash() -> None:
    async def go() -> None:
        source = MqttSource(SourceOptions(linger_s=0.01, max_payload_bytes=1000))
        proto, _ = _connected(source)
        payload = b"x" * 300_000
        packet = _publish(payload, 4) + _publish(b'{"state":"normal"}', 5)
        for start in range(0, len(packet), 65_536):
            proto.data_received(packet[start : start + 65_536])
        (batch,) = await _batches(source)
        (refused,) = batch.refused
        assert refused.reason == "oversized" and refused.payload == payload[:4096]
        assert "300000 bytes, at most 1000" in refused.detail and "sha256" in refused.detail
        assert batch.mids == [4, 5] and batch.payloads == [b'{"state":"normal"}']

    _run(go)


def test_reading_pauses_over_the_byte_budget_and_resumes_on_ack() -> None:
    async def go() -> None:
        options = SourceOptions(linger_s=0.01, max_buffered_bytes=1 << 20, max_queued_batches=99)
        source = MqttSource(options)
        proto, transport = _connected(source)
        payload = b"y" * 60_000
        for mid in range(1, 41):  # 2.4 MB, over the 1 MiB budget
            proto.data_received(_publish(payload, mid))
        assert transport.paused and transport.pauses == 1
        batches = await _batches(source)
        assert sum(len(b) for b in batches) == 40
        for batch in batches:
            source.ack(batch)
        assert not transport.paused
        assert source._held_bytes == 0

    _run(go)


def test_reading_does_not_pause_while_our_publishes_await_their_puback() -> None:
    async def go() -> None:
        options = SourceOptions(linger_s=0.01, max_buffered_bytes=1 << 20, max_queued_batches=99)
        source = MqttSource(options)
        proto, transport = _connected(source)
        future = source.publish("scc/internal/x", b"forward")
        for mid in range(1, 41):
            proto.data_received(_publish(b"z" * 60_000, mid))
        assert not transport.paused  # the PUBACK we wait for comes on this connection
        proto.data_received(b"\x40\x02\x00\x01")  # that PUBACK (our first packet id)
        await asyncio.wait_for(future, 1)
        assert transport.paused  # now the budget applies

    _run(go)
