"""MQTT message source: batches in, acknowledgements out once a batch is safe.

Why our own receive path rather than a client library: the gateway acknowledges a QoS 1
message only after it has been spooled (at-least-once end to end). paho-mqtt tops out near
50k msg/s here, aiomqtt near 25k; gmqtt is fast but only defers a PUBACK by running one
coroutine per message. A receive-only MQTT 5 client is small: it parses PUBLISH packets
straight into batches (gateway.sources.mqtt.protocol), and acknowledges a whole batch with one
socket write.

Memory: the broker's in-flight window is our MQTT 5 Receive Maximum, which bounds the number
of unacknowledged messages, and ``max_buffered_bytes`` bounds their bytes: reading the socket
pauses while the messages handed out and not yet acknowledged hold more. A PUBLISH too long
to be an acceptable message is never buffered whole (gateway.sources.mqtt.large), and we
advertise no Maximum Packet Size, so the broker drops nothing it accepted for us.

A delivery with RETAIN set comes from the broker's retained store and is refused as a dead
letter ``retained`` (gateway.sources.batch says why); one with DUP set is a resend, and gets the
receive time noted for it the first time, if any (gateway.sources.mqtt.receipts). Workers that
forward readings to rule partitions also publish on the same connection
(gateway.sources.mqtt.publish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from gateway.sources.batch import RECEIVE_STEP_NS, RETAINED_DETAIL, Batch, Refused, ack_order
from gateway.sources.mqtt import wire
from gateway.sources.mqtt.large import LargeMessage, stream_threshold
from gateway.sources.mqtt.protocol import Connection
from gateway.sources.mqtt.publish import NO_MATCHING_SUBSCRIBERS, Outbox, PublishRefusedError
from gateway.sources.mqtt.receipts import Receipts
from gateway.sources.mqtt.session import MqttSession, SourceOptions

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


class MqttSource(MqttSession):
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
        super().__init__(options)
        self._event_hook = on_event or (lambda name: None)
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
        self._paused_queue = False  # too many sealed batches waiting
        self._paused_bytes = False  # too many bytes unacknowledged
        self._reading_paused = False
        self._held_bytes = 0  # handed out (or pending) this connection, not acknowledged
        self._unsealed_bytes = 0
        self._outbox = Outbox()
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
        """A PUBLISH that was streamed rather than buffered (gateway.sources.mqtt.large)."""
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

    # -- connection hooks (gateway.sources.mqtt.session) ----------------------------------------
    def _connection(self) -> Connection:
        return Connection(self)

    def _connection_started(self) -> None:
        # Messages of the previous connection that were not acknowledged will be redelivered.
        self._held_bytes = self._unsealed_bytes = 0
        self._paused_bytes = self._reading_paused = False

    def _connection_ended(self) -> None:
        self._seal()  # what this connection delivered goes out under its generation
        self._outbox.fail_all("connection to the broker lost before PUBACK")

    def _subscribed(self, connack: wire.Connack, transport: asyncio.Transport) -> None:
        if self._paused:
            self._reading_paused = True
            transport.pause_reading()
        self._outbox.send_quota = connack.receive_maximum

    def _session_lost(self) -> None:
        if self.receipts is not None:
            self.receipts.session_lost()

    def _on_event(self, name: str) -> None:
        self._event_hook(name)

    async def stop(self) -> None:
        """Disconnect cleanly; unacknowledged messages stay with the broker's session."""
        self._stopping = True
        self._wakeup.set()
        await super().stop()
        self._outbox.fail_all("source stopped")
