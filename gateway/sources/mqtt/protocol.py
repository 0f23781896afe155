"""One MQTT connection's receive side: bytes in, packets out to the source that owns it.

PUBLISH packets are parsed straight from the read buffer (the hot path: a message costs a few
slices and one call); one too long to be an acceptable message is streamed instead of
buffered (gateway.sources.mqtt.large); control packets go to futures and callbacks of the source.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from gateway.sources.mqtt import wire
from gateway.sources.mqtt.large import LargeMessage, LargeReader

log = logging.getLogger(__name__)


class Receiver(Protocol):
    """What a connection hands its packets to (the MQTT source)."""

    stream_above: int  # a PUBLISH longer than this is streamed (gateway.sources.mqtt.large)
    max_payload: int

    def _on_publish(self, topic: bytes, payload: bytes, mid: int) -> None: ...
    def _on_flagged(self, first: int, topic: bytes, payload: bytes, mid: int) -> None: ...
    def _on_large(self, message: LargeMessage) -> None: ...
    def _on_puback(self, body: bytes) -> None: ...
    def _on_disconnect(self, reason: int) -> None: ...
    def _count_bytes(self, count: int) -> None: ...


class Connection(asyncio.Protocol):
    """Parses what the broker sends and feeds the owning source."""

    def __init__(self, source: Receiver) -> None:
        self.source = source
        self.stream_above = source.stream_above
        self.buf = bytearray()
        self.large: LargeReader | None = None
        self.transport: asyncio.Transport | None = None
        loop = asyncio.get_running_loop()
        # Only ``closed`` completes when the connection goes: the others are awaited together
        # with it (MqttSource._answer), so no future is ever left holding an exception that
        # nobody retrieves ("Future exception was never retrieved" on every refused connect).
        self.connack: asyncio.Future[wire.Connack] = loop.create_future()
        self.suback: asyncio.Future[list[int]] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.last_rx = time.monotonic()
        self._streamed = 0  # bytes of the current read that went to a LargeReader

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        self._streamed = 0
        buf = self.buf
        try:
            if self.large is not None:
                data = self._feed_large(data)
                if not data:
                    return
            buf += data
            consumed = self._parse(buf)
        except wire.ProtocolError as err:
            log.error("MQTT protocol error from broker: %s; reconnecting", err)
            if self.transport is not None:
                self.transport.close()
            return
        if consumed:
            del buf[:consumed]
            self.source._count_bytes(consumed - self._streamed)

    def _feed_large(self, data: bytes) -> bytes:
        """Give a streamed PUBLISH its bytes; return what follows it in ``data``."""
        large = self.large
        assert large is not None
        used = large.feed(data)
        if large.done:
            self.large = None
            self.source._on_large(large.message())
        return data[used:]

    def _start_large(self, buf: bytearray, first: int, length: int, at: int, body: int) -> int:
        """Stream the PUBLISH at ``at`` (body from ``body``); return where parsing goes on."""
        stop = min(len(buf), body + length)
        reader = LargeReader(first, length, self.source.max_payload)
        reader.feed(bytes(buf[body:stop]))
        self._streamed += stop - at
        if reader.done:
            self.source._on_large(reader.message())
        else:
            self.large = reader
        return stop

    # One loop body per message, inlined on purpose: each Python call it saves is ~0.1 us.
    def _parse(self, buf: bytearray) -> int:  # noqa: PLR0912 - see above
        pos = 0
        end = len(buf)
        source = self.source
        on_publish = source._on_publish
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
                if length > self.stream_above and first >> 4 == 3:
                    pos = self._start_large(buf, first, length, pos, body)
                    if self.large is not None:
                        break
                    continue
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
                if first & 0x09:  # DUP or RETAIN: rare, handled apart
                    source._on_flagged(first, topic, bytes(buf[start:stop]), mid)
                else:
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
            self.source._on_disconnect(body[0] if body else 0)
        elif ptype != wire.PINGRESP:
            log.debug("ignoring MQTT packet type 0x%02x", ptype)
