"""MQTT message source: batches in, acknowledgements out once a batch is safe.

Why our own receive path rather than a client library: the gateway acknowledges a QoS 1
message only after it has been spooled (at-least-once end to end). paho-mqtt tops out near
50k msg/s here, aiomqtt near 25k; gmqtt is fast but only defers a PUBACK by running one
coroutine per message. A receive-only MQTT 5 client is small: it parses PUBLISH packets
straight into batches (gateway.mqtt_protocol), and acknowledges a whole batch with one
socket write.

Memory: the broker's in-flight window is our MQTT 5 Receive Maximum, which bounds the number
of unacknowledged messages, and ``max_buffered_bytes`` bounds their bytes: reading the socket
pauses while the messages handed out and not yet acknowledged hold more. A PUBLISH too long
to be an acceptable message is never buffered whole (gateway.mqtt_large), and we advertise no
Maximum Packet Size, so the broker drops nothing it accepted for us.

A delivery with RETAIN set comes from the broker's retained store and is refused as a dead
letter ``retained`` (gateway.mqtt_batch says why); one with DUP set is a resend, and gets the
receive time noted for it the first time, if any (gateway.receipts). Workers that forward
readings to rule partitions also publish on the same connection (gateway.mqtt_publish).
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
from typing import Any, TypeVar

from gateway import mqtt_wire as wire
from gateway.mqtt_batch import RECEIVE_STEP_NS, RETAINED_DETAIL, Batch, Refused, ack_order
from gateway.mqtt_large import LargeMessage, stream_threshold
from gateway.mqtt_protocol import Connection
from gateway.mqtt_publish import NO_MATCHING_SUBSCRIBERS, Outbox, PublishRefusedError
from gateway.receipts import Receipts

__all__ = [
    "NO_MATCHING_SUBSCRIBERS",
    "RECEIVE_STEP_NS",
    "Batch",
    "MqttSource",
    "PublishRefusedError",
    "Refused",
    "SourceOptions",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


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
    retain_handling: int = wire.RETAIN_ON_NEW_SUBSCRIPTION
    #: Longer payloads are refused as oversized and never buffered whole; by default there
    #: is no limit of our own (internal forwards), the device subscription sets one.
    max_payload_bytes: int = wire.MAX_REMAINING_LENGTH
    max_buffered_bytes: int = 64 << 20  # unacknowledged bytes before reading pauses


class MqttSource:
    """Subscribes with a persistent session and hands out batches; see module docstring.

    One consumer task calls ``next_batch()`` and then ``ack(batch)`` in the order batches
    were handed out, once each is safe.
    """

    def __init__(
        self,
        options: SourceOptions,
        on_event: Callable[[str], None] | None = None,
        receipts: Receipts | None = None,
    ):
        self.options = options
        self._on_event = on_event or (lambda name: None)
        self.receipts = receipts if options.qos else None
        self.max_payload = options.max_payload_bytes
        self.stream_above = stream_threshold(options.max_payload_bytes)
        self._ready: deque[Batch] = deque()
        self._wakeup = asyncio.Event()
        self._topics: list[bytes] = []
        self._payloads: list[bytes] = []
        self._mids: list[int] = []
        self._refused: list[Refused] = []
        self._fixed: dict[int, int] = {}
        self._linger: asyncio.TimerHandle | None = None
        self._urgent = False  # the pending batch holds an urgent message (sealing soon)
        self._proto: Connection | None = None
        self._generation = 0
        self._paused_queue = False  # too many sealed batches waiting
        self._paused_bytes = False  # too many bytes unacknowledged
        self._reading_paused = False
        self._held_bytes = 0  # handed out (or pending) this connection, not acknowledged
        self._unsealed_bytes = 0
        self._stopping = False
        self._session_ok = False  # the current connection got as far as its subscription
        self._task: asyncio.Task[None] | None = None
        self._outbox = Outbox()
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.takeovers = 0  # DISCONNECTs "session taken over": our client id used elsewhere
        self.sessions_lost = 0  # connects that found no session of ours at the broker
        self.refused = {"oversized": 0, "retained": 0}
        self.byte_pauses = 0

    @property
    def publishes(self) -> int:
        """Publishes of ours the broker has acknowledged."""
        return self._outbox.acked

    @property
    def _paused(self) -> bool:
        # Never while publishes of ours await PUBACKs: they come on this connection, and
        # the batches waiting to be acknowledged may depend on them (a deadlock otherwise).
        # The Receive Maximum still bounds what the broker sends meanwhile.
        return (self._paused_queue or self._paused_bytes) and not self._outbox.busy

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

    def _on_flagged(self, first: int, topic: bytes, payload: bytes, mid: int) -> None:
        """A delivery with RETAIN or DUP set (see module docstring)."""
        if first & wire.PUBLISH_RETAIN:
            self._refuse(topic, payload, mid, "retained", RETAINED_DETAIL)
            return
        if mid and self.receipts is not None:
            ts = self.receipts.receive_time(mid, topic, payload)
            if ts is not None:
                self._fixed[len(self._payloads)] = ts
        self._on_publish(topic, payload, mid)

    def _on_large(self, message: LargeMessage) -> None:
        """A PUBLISH that was streamed rather than buffered (gateway.mqtt_large)."""
        self._count_bytes(len(message.topic) + len(message.payload))
        if not message.oversized:
            self._on_flagged(message.first, message.topic, message.payload, message.mid)
            return
        detail = message.detail(self.max_payload)
        if message.first & wire.PUBLISH_RETAIN:
            detail += "; " + RETAINED_DETAIL
        self._refuse(message.topic, message.payload, message.mid, "oversized", detail)

    def _refuse(self, topic: bytes, payload: bytes, mid: int, reason: str, detail: str) -> None:
        self._refused.append(Refused(len(self._payloads), topic, mid, reason, detail, payload))
        self.refused[reason] += 1
        if self._linger is None:
            self._linger = asyncio.get_running_loop().call_later(self.options.linger_s, self._seal)

    def _count_bytes(self, count: int) -> None:
        """Bytes of complete messages read: held until their batch is acknowledged."""
        self._unsealed_bytes += count
        self._held_bytes += count
        if self._held_bytes > self.options.max_buffered_bytes and not self._paused_bytes:
            self._paused_bytes = True
            self.byte_pauses += 1
            self._apply_pause()

    def _seal(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._urgent = False
        if not self._payloads and not self._refused:
            return
        refused, fixed = self._refused, self._fixed
        mids = ack_order(self._mids, refused)
        batch = Batch(self._topics, self._payloads, mids, self._generation, time.time_ns(),
                      refused, fixed or None, self._unsealed_bytes)  # fmt: skip
        if self.receipts is not None and batch.payloads:
            self.receipts.note(batch.received_ns, self._mids, batch.topics, batch.payloads, fixed)
        if fixed:
            log.info("%d redelivered messages keep their first receive time", len(fixed))
        self._topics, self._payloads, self._mids, self._refused, self._fixed = [], [], [], [], {}
        self._unsealed_bytes = 0
        self._ready.append(batch)
        self._wakeup.set()
        if len(self._ready) >= self.options.max_queued_batches and not self._paused_queue:
            self._paused_queue = True
            self._apply_pause()

    def _apply_pause(self) -> None:
        """Pause or resume reading the socket to match the two pause reasons."""
        paused = self._paused
        proto = self._proto
        if proto is None or proto.transport is None or proto.transport.is_closing():
            return
        if paused != self._reading_paused:
            self._reading_paused = paused
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
        if self._paused_queue and len(self._ready) < self.options.max_queued_batches // 2:
            self._paused_queue = False
            self._apply_pause()
        return batch

    def ack(self, batch: Batch) -> None:
        """Acknowledge a safe batch. Acks of an older connection are dropped: the broker
        redelivers those messages and duplicates are harmless downstream."""
        if batch.generation != self._generation:
            return
        self._held_bytes -= batch.nbytes
        batch.nbytes = 0
        if self._paused_bytes and self._held_bytes <= self.options.max_buffered_bytes // 2:
            self._paused_bytes = False
            self._apply_pause()
        proto = self._proto
        if not batch.mids or proto is None:
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
        transport = self._proto.transport if self._proto is not None else None
        future = self._outbox.publish(transport, topic, payload, require_subscriber)
        if self._reading_paused:
            self._apply_pause()
        return future

    def _on_puback(self, body: bytes) -> None:
        transport = self._proto.transport if self._proto is not None else None
        self._outbox.on_puback(body, transport)
        if self._reading_paused != self._paused:
            self._apply_pause()

    def _on_disconnect(self, reason: int) -> None:
        why = wire.DISCONNECT_REASONS.get(reason, "unknown reason")
        if reason == wire.SESSION_TAKEN_OVER:
            self.takeovers += 1
            log.error(
                "broker sent DISCONNECT 0x%02x (%s: %s); reconnecting at once",
                reason,
                why,
                self.options.connect.client_id,
            )
        else:
            log.warning("broker sent DISCONNECT (reason 0x%02x: %s)", reason, why)

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
        self._outbox.fail_all("source stopped")

    async def _run(self) -> None:
        opts = self.options
        delay = opts.reconnect_min_s
        while not self._stopping:
            self._session_ok = False
            try:
                await self._session()
            except (OSError, ConnectionError, TimeoutError, wire.ProtocolError) as err:
                log.warning("MQTT %s:%s: %s", opts.host, opts.port, err)
            self.connected.clear()
            if self._stopping:
                break
            if self._session_ok:
                # The connection worked: whatever ended it (a broker restart, a takeover of
                # our client id), start the backoff afresh rather than where it last was.
                delay = opts.reconnect_min_s
            # Full jitter keeps a fleet of gateways from reconnecting in lockstep.
            await asyncio.sleep(random.uniform(0, delay))
            delay = min(delay * 2, opts.reconnect_max_s)
            self.reconnects += 1
            self._on_event("reconnect")

    async def _session(self) -> None:
        opts = self.options
        loop = asyncio.get_running_loop()
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: Connection(self), opts.host, opts.port),
            opts.connect_timeout_s,
        )
        assert isinstance(proto, Connection)
        transport = proto.transport
        assert transport is not None
        # Messages of the previous connection that were not acknowledged will be redelivered.
        self._generation += 1
        self._held_bytes = self._unsealed_bytes = 0
        self._paused_bytes = self._reading_paused = False
        self._proto = proto
        try:
            await self._subscribe(proto, transport)
            self._session_ok = True
            self.connected.set()
            await self._keepalive(proto)
        finally:
            transport.close()
            self._seal()  # what this connection delivered goes out under its generation
            self._proto = None
            self._outbox.fail_all("connection to the broker lost before PUBACK")

    async def _subscribe(self, proto: Connection, transport: asyncio.Transport) -> None:
        opts = self.options
        transport.write(wire.connect_packet(opts.connect))
        connack = await self._answer(proto, proto.connack, "CONNACK")
        if connack.reason_code != 0:
            why = wire.CONNACK_REASONS.get(connack.reason_code, "refused")
            raise ConnectionError(f"broker refused connection: {why}")
        if not connack.session_present:
            self._on_new_session()
        packet = wire.subscribe_packet(1, list(opts.topic_filters), opts.qos, opts.retain_handling)
        transport.write(packet)
        codes = await self._answer(proto, proto.suback, "SUBACK")
        if any(code >= 0x80 for code in codes):
            raise ConnectionError(f"broker refused subscription: codes {codes}")
        limit = connack.maximum_packet_size
        log.info(
            "subscribed to %s on %s:%s (session present: %s; broker accepts packets up to %s)",
            ",".join(opts.topic_filters),
            opts.host,
            opts.port,
            connack.session_present,
            "any size" if limit is None else f"{limit} bytes",
        )
        if self._paused:
            self._reading_paused = True
            transport.pause_reading()
        self._outbox.send_quota = connack.receive_maximum

    def _on_new_session(self) -> None:
        """The broker kept no session for us: what it had queued for us is gone."""
        if self.receipts is not None:
            self.receipts.session_lost()
        if self._generation > 1:
            self.sessions_lost += 1
            log.warning(
                "broker has no session for client id %s any more (expired, or wiped by a "
                "client that connected with our id and a clean start): messages it had "
                "queued for us are lost",
                self.options.connect.client_id,
            )

    async def _answer(self, proto: Connection, future: asyncio.Future[_T], what: str) -> _T:
        """Wait for ``future`` or the end of the connection, whichever comes first."""
        timeout = self.options.connect_timeout_s
        waiters: set[asyncio.Future[Any]] = {future, proto.closed}
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        if future.done():
            return future.result()
        if proto.closed.done():
            raise ConnectionError(f"connection closed by the broker before {what}")
        raise TimeoutError(f"no {what} within {timeout:g} s")

    async def _keepalive(self, proto: Connection) -> None:
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
