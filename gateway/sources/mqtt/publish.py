"""QoS 1 publishes of our own on the source's connection (workers forwarding to partitions).

``publish`` returns a future completed by the broker's PUBACK. Outstanding publishes are not
resent after a reconnect: they fail with ``ConnectionError``. The batch that caused them is
then never acknowledged, and because the connection is gone the broker redelivers its
messages, which forwards them again. So a forward is never lost, and a duplicate is harmless
(the rules engine ignores readings not newer than the last one it applied for a device).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

from gateway.sources.mqtt import wire

log = logging.getLogger(__name__)

NO_MATCHING_SUBSCRIBERS = 0x10  # PUBACK reason: accepted, but nobody subscribes to it


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


class Outbox:
    """Publishes awaiting PUBACK, and those queued beyond the broker's Receive Maximum.

    Packet ids are ours alone (the broker numbers its own publishes to us)."""

    def __init__(self) -> None:
        self._outgoing: dict[int, _Outgoing] = {}
        self._held: deque[int] = deque()
        self.send_quota = 65535
        self._next_packet_id = 0
        self.acked = 0

    @property
    def busy(self) -> bool:
        """Whether publishes await their PUBACK (the connection must then keep reading)."""
        return bool(self._outgoing)

    def publish(
        self,
        transport: asyncio.Transport | None,
        topic: str,
        payload: bytes,
        require_subscriber: bool,
    ) -> asyncio.Future[None]:
        """Send (or queue) a QoS 1 publish; see MqttSource.publish."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if transport is None or transport.is_closing():
            future.set_exception(ConnectionError("not connected to the broker"))
            return future
        if len(self._outgoing) >= 0xFFFF:
            future.set_exception(ConnectionError("no free packet id (65535 publishes pending)"))
            return future
        packet_id = self._free_packet_id()
        item = _Outgoing(
            topic, wire.publish_packet(topic, payload, packet_id), future, require_subscriber
        )
        self._outgoing[packet_id] = item
        if len(self._outgoing) - len(self._held) <= self.send_quota:
            transport.write(item.packet)
        else:
            self._held.append(packet_id)
        return future

    def _free_packet_id(self) -> int:
        for _ in range(0x10000):  # bounded: fewer than 65535 are in use (checked by caller)
            self._next_packet_id = self._next_packet_id % 0xFFFF + 1
            if self._next_packet_id not in self._outgoing:
                break
        return self._next_packet_id

    def on_puback(self, body: bytes, transport: asyncio.Transport | None) -> None:
        """Complete the publish a PUBACK answers; send the next one held back."""
        packet_id, reason = wire.parse_puback(body)
        item = self._outgoing.pop(packet_id, None)
        if item is None:
            log.debug("PUBACK for unknown packet id %d", packet_id)
            return
        self.acked += 1
        if not item.future.done():
            if reason >= 0x80 or (reason == NO_MATCHING_SUBSCRIBERS and item.require_subscriber):
                item.future.set_exception(PublishRefusedError(item.topic, reason))
            else:
                item.future.set_result(None)
        if self._held and transport is not None:
            held = self._outgoing.get(self._held.popleft())
            if held is not None:
                transport.write(held.packet)

    def fail_all(self, why: str) -> None:
        """Fail every outstanding publish (the connection is gone)."""
        outgoing, self._outgoing = self._outgoing, {}
        self._held.clear()
        for item in outgoing.values():
            if not item.future.done():
                item.future.set_exception(ConnectionError(why))
