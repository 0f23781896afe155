"""PUBLISH packets too big to buffer: read in pieces, keeping only what a dead letter needs.

The gateway advertises no Maximum Packet Size, so the broker's limit is the only one (16 MiB
for the brokers ``gateway services`` runs; Mosquitto's default is the protocol's 256 MiB) and
nothing it accepted for us is dropped before we see it. Memory must not follow that limit, so
a PUBLISH longer than any acceptable message can be (``max_payload`` plus the largest topic and
header) is not buffered: :class:`LargeReader` reads its topic, packet id and flags, skips its
properties, runs its payload through SHA-256 as it streams past and keeps only the first
``prefix_bytes``. The source then refuses it as ``oversized`` (a dead letter with that prefix,
the full length and the hash), acknowledged once the dead letter is stored like any other.

A payload within ``max_payload`` that arrives in such a packet (huge properties) is kept whole
and handled as usual.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.sources.mqtt import wire

#: How much of an oversized payload is kept in its dead letter (enough to see what it was).
PREFIX_BYTES = 4096
#: Topic length field, longest topic, packet id and the properties length: a message with a
#: payload of ``max_payload`` bytes and no properties is never longer than this much more.
HEADER_ALLOWANCE = 2 + 0xFFFF + 2 + 4


def stream_threshold(max_payload: int) -> int:
    """Remaining length above which a PUBLISH is streamed rather than buffered.

    At least 16 KiB, so the parser's inlined one- and two-byte length paths never need the
    check (any packet they see is buffered)."""
    return max(max_payload + HEADER_ALLOWANCE, 1 << 14)


@dataclass(frozen=True, slots=True)
class LargeMessage:
    """A PUBLISH read by :class:`LargeReader`."""

    first: int  # the fixed header byte: type, DUP, QoS and RETAIN flags
    topic: bytes
    mid: int
    payload: bytes  # the whole payload when ``oversized`` is false, else its first bytes
    length: int  # the payload's full length
    sha256: str  # hex digest of the whole payload ("" unless oversized)

    @property
    def oversized(self) -> bool:
        """Whether the payload is longer than the reader's ``max_payload``."""
        return bool(self.sha256)

    def detail(self, max_payload: int) -> str:
        """The dead-letter detail of an oversized message."""
        return (
            f"{self.length} bytes, at most {max_payload}; sha256 {self.sha256}; "
            f"{TRUNCATED_MARK} {len(self.payload)} bytes are kept"
        )


TRUNCATED_MARK = "only the first"


def is_truncated(detail: str) -> bool:
    """Whether a dead letter holds only the start of its message (so cannot be replayed)."""
    return TRUNCATED_MARK in detail


class LargeReader:
    """Consumes one PUBLISH packet of ``remaining`` bytes (after its fixed header) in pieces."""

    def __init__(
        self, first: int, remaining: int, max_payload: int, prefix_bytes: int = PREFIX_BYTES
    ) -> None:
        self.first = first
        self.left = remaining  # bytes of this packet not yet fed
        self.remaining = remaining
        self.max_payload = max_payload
        self.prefix_bytes = prefix_bytes
        self._head = bytearray()  # topic, packet id and properties length, until complete
        self._header: tuple[bytes, int] | None = None  # (topic, mid) once read
        self._props_left = 0
        self._length = 0
        self._kept = bytearray()
        self._hash: hashlib._Hash | None = None

    @property
    def done(self) -> bool:
        """Whether the whole packet has been fed."""
        return self.left == 0

    def feed(self, data: bytes) -> int:
        """Take the bytes of ``data`` that belong to this packet; return how many that was."""
        take = min(len(data), self.left)
        self.left -= take
        chunk = memoryview(data)[:take]
        if self._header is None:
            self._head += chunk
            start = self._parse_header()
            if start is None:
                if self.left == 0:
                    raise wire.ProtocolError("PUBLISH ends inside its header")
                return take
            chunk = memoryview(bytes(self._head[start:]))
            self._head = bytearray()
        self._body(chunk)
        return take

    def _parse_header(self) -> int | None:
        """Read topic, packet id and properties length; the offset after them, or None."""
        head = self._head
        if len(head) < 2:
            return None
        pos = 2 + ((head[0] << 8) | head[1])
        topic_end = pos
        mid = 0
        if self.first & 0x06:
            if len(head) < pos + 2:
                return None
            mid = (head[pos] << 8) | head[pos + 1]
            pos += 2
        decoded = wire.decode_varint(head, pos)
        if decoded is None:
            return None
        props_len, start = decoded
        self._length = self.remaining - start - props_len
        if self._length < 0:
            raise wire.ProtocolError("PUBLISH properties overrun the packet")
        self._header = (bytes(head[2:topic_end]), mid)
        self._props_left = props_len
        if self._length > self.max_payload:
            self._hash = hashlib.sha256()
        return start

    def _body(self, chunk: memoryview) -> None:
        if self._props_left:
            skip = min(len(chunk), self._props_left)
            self._props_left -= skip
            chunk = chunk[skip:]
        if self._hash is None:
            self._kept += chunk
            return
        self._hash.update(chunk)
        room = self.prefix_bytes - len(self._kept)
        if room > 0:
            self._kept += chunk[:room]

    def message(self) -> LargeMessage:
        """The message, once ``done``."""
        if not self.done or self._header is None:
            raise wire.ProtocolError("PUBLISH not complete")
        topic, mid = self._header
        digest = self._hash.hexdigest() if self._hash is not None else ""
        return LargeMessage(self.first, topic, mid, bytes(self._kept), self._length, digest)
