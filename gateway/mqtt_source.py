"""MQTT message source: batches in, acknowledgements out once a batch is safe.

Why our own receive path rather than a client library: the gateway acknowledges a QoS 1
message only after it has been spooled (at-least-once end to end). paho-mqtt tops out near
50k msg/s here, aiomqtt near 25k; gmqtt is fast but only defers a PUBACK by running one
coroutine per message. A receive-only MQTT 5 client is small: it parses PUBLISH packets
straight into batches, and acknowledges a whole batch with one socket write. The broker's
in-flight window is our MQTT 5 Receive Maximum, which bounds memory under any burst.

Workers that forward readings to rule partitions also publish, at QoS 1, on the same
connection: ``publish`` returns a future completed by the broker's PUBACK. Outstanding
publishes are not resent after a reconnect: they fail with ``ConnectionError`` when the
connection is lost. The batch that caused them is then never acknowledged, and because the
connection is gone the broker redelivers its messages, which forwards them again. So a
forward is never lost, and a duplicate is harmless (the rules engine ignores readings not
newer than the last one it applied for a device).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway import mqtt_wire as wire

log = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 0x10  # PUBACK reason: accepted, but nobody subscribes to it


@dataclass(slots=True)
class Batch:
    """Messages received together; ``mids`` holds QoS 1 packet ids still to acknowledge."""

    topics: list[bytes]
    payloads: list[bytes]
    mids: list[int]
    generation: int
    received_ns: int

    def __len__(self) -> int:
        return len(self.payloads)


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """Where and how the gateway subscribes."""

    host: str = "127.0.0.1"
    port: int = 1883
    topic_filters: tuple[str, ...] = ("scc/v1/+/+",)
    qos: int = 1
    connect: wire.ConnectOptions = field(
        default_factory=lambda: wire.ConnectOptions(client_id="scc-gateway")
    )
    batch_max: int = 5000
    linger_s: float = 0.02
    # A message on a topic ending so (an alarm, a fault) seals its batch after this much
    # instead: events are rare and somebody waits for them; telemetry can wait for company.
    urgent_suffixes: tuple[bytes, ...] = (b"/event",)
    urgent_linger_s: float = 0.0
    max_queued_batches: int = 8
    reconnect_min_s: float = 0.2
    reconnect_max_s: float = 10.0
    connect_timeout_s: float = 10.0


class _Protocol(asyncio.Protocol):
    """One connection: parses packets and feeds the owning source."""

    def __init__(self, source: MqttSource) -> None:
        self.source = source
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[wire.Connack] = asyncio.get_running_loop().create_future()
        self.suback: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_rx = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in (self.connack, self.suback):
            if not fut.done():
                fut.set_exception(ConnectionError(f"connection lost: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        buf = self.buf
        buf += data
        try:
            consumed = self._parse(buf)
        except wire.ProtocolError as err:
            log.error("MQTT protocol error from broker: %s; reconnecting", err)
            if self.transport is not None:
                self.transport.close()
            return
        if consumed:
            del buf[:consumed]

    def _parse(self, buf: bytearray) -> int:
        pos = 0
        end = len(buf)
        on_publish = self.source._on_publish
        while end - pos >= 2:
            first = buf[pos]
            # Remaining length: one or two bytes for every message we expect (< 16 KiB);
            # inlined, since this loop runs once per message.
            byte = buf[pos + 1]
            if byte < 0x80:
                length, body = byte, pos + 2
            elif end - pos >= 3 and buf[pos + 2] < 0x80:
                length, body = (byte & 0x7F) | (buf[pos + 2] << 7), pos + 3
            else:
                decoded = wire.decode_varint(buf, pos + 1)
                if decoded is None:
                    break
                length, body = decoded
            stop = body + length
            if stop > end:
                break
            if first >> 4 == 3:
                tlen = (buf[body] << 8) | buf[body + 1]
                j = body + 2 + tlen
                topic = bytes(buf[body + 2 : j])
                mid = 0
                if first & 0x06:
                    mid = (buf[j] << 8) | buf[j + 1]
                    j += 2
                if j < stop and buf[j] == 0:  # no properties: the usual case
                    start = j + 1
                else:
                    props = wire.decode_varint(buf, j)
                    if props is None or props[1] + props[0] > stop:
                        raise wire.ProtocolError("PUBLISH properties overrun the packet")
                    start = props[1] + props[0]
                on_publish(topic, bytes(buf[start:stop]), mid)
            else:
                self._control(first, bytes(buf[body:stop]))
            pos = stop
        return pos

    def _control(self, first: int, body: bytes) -> None:
        ptype = first & 0xF0
        if ptype == wire.CONNACK and not self.connack.done():
            self.connack.set_result(wire.parse_connack(body))
        elif ptype == wire.PUBACK:
            self.source._on_puback(body)
        elif ptype == wire.SUBACK and not self.suback.done():
            self.suback.set_result(wire.parse_suback(body))
        elif ptype == wire.DISCONNECT:
            reason = body[0] if body else 0
            log.warning("broker sent DISCONNECT (reason 0x%02x)", reason)
        elif ptype != wire.PINGRESP:
            log.debug("ignoring MQTT packet type 0x%02x", ptype)


class PublishRefusedError(Exception):
    """The broker answered a publish of ours with a failure reason code."""

    def __init__(self, topic: str, reason_code: int) -> None:
        super().__init__(f"broker refused publish on {topic!r} (reason 0x{reason_code:02x})")
        self.topic = topic
        self.reason_code = reason_code


@dataclass(slots=True)
class _Outgoing:
    topic: str
    packet: bytes
    future: asyncio.Future[None]
    require_subscriber: bool


class MqttSource:
    """Subscribes with a persistent session and hands out batches; see module docstring.

    One consumer task calls ``next_batch()`` and then ``ack(batch)`` in the order batches
    were handed out, once each is safe.
    """

    def __init__(self, options: SourceOptions, on_event: Callable[[str], None] | None = None):
        self.options = options
        self._on_event = on_event or (lambda name: None)
        self._ready: deque[Batch] = deque()
        self._wakeup = asyncio.Event()
        self._topics: list[bytes] = []
        self._payloads: list[bytes] = []
        self._mids: list[int] = []
        self._linger: asyncio.TimerHandle | None = None
        self._urgent = False  # the pending batch holds an urgent message (sealing soon)
        self._proto: _Protocol | None = None
        self._generation = 0
        self._paused = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.reconnects = 0
        # QoS 1 publishes of ours: sent and awaiting PUBACK, and queued beyond the broker's
        # Receive Maximum. Packet ids are ours alone (the broker numbers its own publishes).
        self._outgoing: dict[int, _Outgoing] = {}
        self._held: deque[int] = deque()
        self._send_quota = 65535
        self._next_packet_id = 0
        self.publishes = 0

    # -- receiving ---------------------------------------------------------------------
    def _on_publish(self, topic: bytes, payload: bytes, mid: int) -> None:
        self._topics.append(topic)
        self._payloads.append(payload)
        self._mids.append(mid)
        opts = self.options
        if len(self._payloads) >= opts.batch_max:
            self._seal()
        elif not self._urgent and opts.urgent_suffixes and topic.endswith(opts.urgent_suffixes):
            # Seal once the messages already read are in (call_later 0: after this read).
            if self._linger is not None:
                self._linger.cancel()
            self._urgent = True
            self._linger = asyncio.get_running_loop().call_later(opts.urgent_linger_s, self._seal)
        elif self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(opts.linger_s, self._seal)

    def _seal(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._urgent = False
        if not self._payloads:
            return
        mids = [m for m in self._mids if m]
        batch = Batch(self._topics, self._payloads, mids, self._generation, time.time_ns())
        self._topics, self._payloads, self._mids = [], [], []
        self._ready.append(batch)
        self._wakeup.set()
        if len(self._ready) >= self.options.max_queued_batches and not self._paused:
            self._pause(True)

    def _pause(self, paused: bool) -> None:
        self._paused = paused
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            if paused:
                proto.transport.pause_reading()
            else:
                proto.transport.resume_reading()

    async def next_batch(self, timeout: float | None = None) -> Batch | None:
        """The next sealed batch, or None when ``timeout`` passes or the source stops."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._ready:
            if self._stopping:
                return None
            self._wakeup.clear()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), remaining)
        batch = self._ready.popleft()
        if self._paused and len(self._ready) < self.options.max_queued_batches // 2:
            self._pause(False)
        return batch

    def ack(self, batch: Batch) -> None:
        """Acknowledge a safe batch. Acks of an older connection are dropped: the broker
        redelivers those messages and duplicates are harmless downstream."""
        proto = self._proto
        if not batch.mids or batch.generation != self._generation or proto is None:
            return
        transport = proto.transport
        if transport is None or transport.is_closing():
            return
        transport.write(wire.puback_packets(batch.mids))

    # -- publishing (QoS 1, PUBACK tracked) ---------------------------------------------
    def publish(
        self, topic: str, payload: bytes, require_subscriber: bool = False
    ) -> asyncio.Future[None]:
        """Publish at QoS 1; the future completes on the broker's PUBACK.

        It fails with ConnectionError when not connected or when the connection is lost
        before the PUBACK (no resend: see the module docstring), with PublishRefusedError
        when the broker refuses the message, or (``require_subscriber``) when it answers
        "no matching subscribers": the message went nowhere.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            future.set_exception(ConnectionError("not connected to the broker"))
            return future
        if len(self._outgoing) >= 0xFFFF:
            future.set_exception(ConnectionError("no free packet id (65535 publishes pending)"))
            return future
        packet_id = self._free_packet_id()
        self._outgoing[packet_id] = _Outgoing(
            topic, wire.publish_packet(topic, payload, packet_id), future, require_subscriber
        )
        if len(self._outgoing) - len(self._held) <= self._send_quota:
            proto.transport.write(self._outgoing[packet_id].packet)
        else:
            self._held.append(packet_id)
        return future

    def _free_packet_id(self) -> int:
        for _ in range(0x10000):  # bounded: fewer than 65535 are in use (checked by caller)
            self._next_packet_id = self._next_packet_id % 0xFFFF + 1
            if self._next_packet_id not in self._outgoing:
                break
        return self._next_packet_id

    def _on_puback(self, body: bytes) -> None:
        packet_id, reason = wire.parse_puback(body)
        item = self._outgoing.pop(packet_id, None)
        if item is None:
            log.debug("PUBACK for unknown packet id %d", packet_id)
            return
        self.publishes += 1
        if not item.future.done():
            if reason >= 0x80 or (reason == NO_MATCHING_SUBSCRIBERS and item.require_subscriber):
                item.future.set_exception(PublishRefusedError(item.topic, reason))
            else:
                item.future.set_result(None)
        proto = self._proto
        if self._held and proto is not None and proto.transport is not None:
            held = self._outgoing.get(self._held.popleft())
            if held is not None:
                proto.transport.write(held.packet)

    def _fail_publishes(self, why: str) -> None:
        outgoing, self._outgoing = self._outgoing, {}
        self._held.clear()
        for item in outgoing.values():
            if not item.future.done():
                item.future.set_exception(ConnectionError(why))

    @property
    def generation(self) -> int:
        """Number of the current connection (a batch of an older one cannot be acked)."""
        return self._generation

    def drop_connection(self) -> None:
        """Close the connection (it is re-established): unacknowledged messages come again."""
        proto = self._proto
        if proto is not None and proto.transport is not None:
            proto.transport.close()

    # -- connection lifecycle ----------------------------------------------------------
    async def start(self) -> None:
        """Start connecting in the background; returns at once."""
        self._task = asyncio.create_task(self._run(), name="mqtt-source")

    async def wait_connected(self, timeout: float) -> None:
        """Wait for the first successful subscription; TimeoutError otherwise."""
        await asyncio.wait_for(self.connected.wait(), timeout)

    async def stop(self) -> None:
        """Disconnect cleanly; unacknowledged messages stay with the broker's session."""
        self._stopping = True
        self._wakeup.set()
        proto = self._proto
        if proto is not None and proto.transport is not None and not proto.transport.is_closing():
            proto.transport.write(wire.DISCONNECT_NORMAL)
            proto.transport.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fail_publishes("source stopped")

    async def _run(self) -> None:
        delay = self.options.reconnect_min_s
        while not self._stopping:
            try:
                await self._session()
                delay = self.options.reconnect_min_s
            except (OSError, ConnectionError, TimeoutError, wire.ProtocolError) as err:
                log.warning("MQTT %s:%s: %s", self.options.host, self.options.port, err)
            self.connected.clear()
            if self._stopping:
                break
            # Full jitter keeps a fleet of gateways from reconnecting in lockstep.
            await asyncio.sleep(random.uniform(self.options.reconnect_min_s, delay))
            delay = min(delay * 2, self.options.reconnect_max_s)
            self.reconnects += 1
            self._on_event("reconnect")

    async def _session(self) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: _Protocol(self), opts.host, opts.port),
            opts.connect_timeout_s,
        )
        assert isinstance(proto, _Protocol)
        transport = proto.transport
        assert transport is not None
        # Messages of the previous connection that were not acknowledged will be redelivered.
        self._generation += 1
        self._proto = proto
        try:
            transport.write(wire.connect_packet(opts.connect))
            connack = await asyncio.wait_for(proto.connack, opts.connect_timeout_s)
            if connack.reason_code != 0:
                why = wire.CONNACK_REASONS.get(connack.reason_code, "refused")
                raise ConnectionError(f"broker refused connection: {why}")
            transport.write(wire.subscribe_packet(1, list(opts.topic_filters), opts.qos))
            codes = await asyncio.wait_for(proto.suback, opts.connect_timeout_s)
            if any(code >= 0x80 for code in codes):
                raise ConnectionError(f"broker refused subscription: codes {codes}")
            log.info(
                "subscribed to %s on %s:%s (session present: %s)",
                ",".join(opts.topic_filters),
                opts.host,
                opts.port,
                connack.session_present,
            )
            if self._paused:
                transport.pause_reading()
            self._send_quota = connack.receive_maximum
            self.connected.set()
            await self._keepalive(proto)
        finally:
            transport.close()
            self._proto = None
            self._fail_publishes("connection to the broker lost before PUBACK")

    async def _keepalive(self, proto: _Protocol) -> None:
        keepalive = self.options.connect.keepalive_s or 60
        transport = proto.transport
        assert transport is not None
        while not proto.closed.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(proto.closed), keepalive / 2)
            if proto.closed.done():
                break
            idle = time.monotonic() - proto.last_rx
            if idle > keepalive * 1.5 and not self._paused:
                raise ConnectionError(f"no traffic from broker for {idle:.0f} s")
            transport.write(wire.PINGREQ)
        raise ConnectionError("connection closed by broker")
