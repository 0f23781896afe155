"""MQTT 5 wire format: the few packets a subscribing gateway sends and receives.

Kept apart from the connection logic so it can be tested byte for byte and fuzzed. Only the
parts the gateway needs are here: CONNECT, SUBSCRIBE, PUBACK (batched), PINGREQ, DISCONNECT
out; CONNACK, SUBACK, PUBLISH, PINGRESP, DISCONNECT in; and, for the workers that forward
readings to rule partitions, QoS 1 PUBLISH out and PUBACK in.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x82
SUBACK = 0x90
PINGREQ = b"\xc0\x00"
PINGRESP = 0xD0
DISCONNECT_NORMAL = b"\xe0\x00"
DISCONNECT = 0xE0

PROP_SESSION_EXPIRY = 0x11
PROP_RECEIVE_MAXIMUM = 0x21
PROP_MAXIMUM_PACKET_SIZE = 0x27

# Flags of a PUBLISH packet's first byte.
PUBLISH_RETAIN = 0x01  # delivered to us from the broker's retained store (see .source)
PUBLISH_DUP = 0x08  # a resend of a PUBLISH the broker sent before (same packet id)

# SUBSCRIBE option Retain Handling (MQTT 5, 3.8.3.1): 0 send retained messages on every
# SUBSCRIBE, 1 only when the subscription is new, 2 never.
RETAIN_ON_SUBSCRIBE = 0
RETAIN_ON_NEW_SUBSCRIPTION = 1
RETAIN_NEVER = 2

MAX_REMAINING_LENGTH = 268_435_455


class ProtocolError(Exception):
    """The peer sent bytes that are not valid MQTT 5; the connection must be dropped."""


def encode_varint(value: int) -> bytes:
    """MQTT variable byte integer."""
    if not 0 <= value <= MAX_REMAINING_LENGTH:
        raise ValueError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf: bytes | bytearray, pos: int) -> tuple[int, int] | None:
    """Decode a variable byte integer at ``pos``: (value, next position), None if incomplete."""
    value = 0
    shift = 0
    end = len(buf)
    for _ in range(4):
        if pos >= end:
            return None
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ProtocolError("variable byte integer longer than 4 bytes")


def _utf8(text: str) -> bytes:
    raw = text.encode("utf-8")
    if len(raw) > 0xFFFF:
        raise ValueError("MQTT string longer than 65535 bytes")
    return struct.pack("!H", len(raw)) + raw


def _packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_varint(len(body)) + body


@dataclass(frozen=True, slots=True)
class ConnectOptions:
    """What the gateway asks of the broker when it connects."""

    client_id: str
    keepalive_s: int = 30
    clean_start: bool = False
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 30_000
    #: None: no Maximum Packet Size property, so the broker's own limit is the only one and
    #: nothing it accepted for us is dropped on the way (a limit of ours below the broker's
    #: makes it discard bigger messages silently, MQTT 5 3.1.2.11.4). Big packets cost the
    #: source no memory: it streams them (gateway.sources.mqtt.large).
    maximum_packet_size: int | None = None
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.receive_maximum <= 65535:
            raise ValueError("receive_maximum must be 1..65535")
        if not 0 <= self.keepalive_s <= 65535:
            raise ValueError("keepalive_s must be 0..65535")
        if self.maximum_packet_size is not None and not 1 <= self.maximum_packet_size < 1 << 32:
            raise ValueError("maximum_packet_size must be 1..4294967295 (or None: no limit)")


def connect_packet(opts: ConnectOptions) -> bytes:
    """CONNECT with session expiry, receive maximum (our in-flight window) and packet limit."""
    flags = 0x02 if opts.clean_start else 0
    payload = _utf8(opts.client_id)
    if opts.username is not None:
        flags |= 0x80
        payload += _utf8(opts.username)
    if opts.password is not None:
        flags |= 0x40
        payload += _utf8(opts.password)
    props = struct.pack("!BI", PROP_SESSION_EXPIRY, opts.session_expiry_s) + struct.pack(
        "!BH", PROP_RECEIVE_MAXIMUM, opts.receive_maximum
    )
    if opts.maximum_packet_size is not None:
        props += struct.pack("!BI", PROP_MAXIMUM_PACKET_SIZE, opts.maximum_packet_size)
    body = (
        _utf8("MQTT")
        + bytes([5, flags])
        + struct.pack("!H", opts.keepalive_s)
        + encode_varint(len(props))
        + props
        + payload
    )
    return _packet(CONNECT, body)


def subscribe_packet(
    packet_id: int, filters: list[str], qos: int, retain_handling: int = RETAIN_ON_SUBSCRIBE
) -> bytes:
    """SUBSCRIBE to each filter at ``qos`` with the given Retain Handling option.

    No Local and Retain As Published stay 0: the broker then clears the RETAIN flag of every
    message it forwards live, so RETAIN set on a delivery means "from the retained store".
    """
    if retain_handling not in (RETAIN_ON_SUBSCRIBE, RETAIN_ON_NEW_SUBSCRIPTION, RETAIN_NEVER):
        raise ValueError(f"retain_handling must be 0, 1 or 2, not {retain_handling}")
    options = bytes([(qos & 0x03) | retain_handling << 4])
    body = struct.pack("!H", packet_id) + b"\x00"
    for topic_filter in filters:
        body += _utf8(topic_filter) + options
    return _packet(SUBSCRIBE, body)


def puback_packets(mids: list[int]) -> bytes:
    """PUBACKs for many packet ids in one buffer, in the order given (MQTT requires order)."""
    # Each PUBACK with success and no properties is 0x40 0x02 <mid hi> <mid lo>.
    return struct.pack(f"!{len(mids)}I", *[0x40020000 | mid for mid in mids])


def publish_packet(topic: str, payload: bytes, packet_id: int, dup: bool = False) -> bytes:
    """A QoS 1 PUBLISH without properties (``dup`` marks a resend)."""
    if not 1 <= packet_id <= 0xFFFF:
        raise ValueError(f"packet id out of range: {packet_id}")
    first = PUBLISH | 0x02 | (0x08 if dup else 0)
    return _packet(first, _utf8(topic) + struct.pack("!H", packet_id) + b"\x00" + payload)


def parse_puback(body: bytes) -> tuple[int, int]:
    """Packet id and reason code of a PUBACK (reason 0 when omitted; >= 0x80 is a refusal)."""
    if len(body) < 2:
        raise ProtocolError("PUBACK shorter than 2 bytes")
    return (body[0] << 8) | body[1], body[2] if len(body) > 2 else 0


@dataclass(frozen=True, slots=True)
class Connack:
    """The broker's answer to CONNECT."""

    session_present: bool
    reason_code: int
    receive_maximum: int = 65535  # how many QoS 1 publishes of ours the broker takes at once
    maximum_packet_size: int | None = None  # the largest packet the broker accepts (None: any)


def parse_connack(body: bytes) -> Connack:
    """Parse the CONNACK body: flags, reason code, the broker's Receive Maximum and packet limit."""
    if len(body) < 2:
        raise ProtocolError("CONNACK shorter than 2 bytes")
    props = _numeric_properties(body)
    return Connack(
        bool(body[0] & 0x01),
        body[1],
        props.get(PROP_RECEIVE_MAXIMUM) or 65535,
        props.get(PROP_MAXIMUM_PACKET_SIZE),
    )


# Sizes of the CONNACK properties we skip over: fixed-size ones by identifier; the rest are
# UTF-8 strings or binary data (2-byte length), user properties being a pair of strings.
_FIXED_PROPERTY_SIZES = {
    0x11: 4, 0x27: 4, 0x13: 2, 0x22: 2, 0x21: 2,
    0x24: 1, 0x25: 1, 0x28: 1, 0x29: 1, 0x2A: 1,
}  # fmt: skip


_NUMERIC_FORMATS = {2: "!H", 4: "!I"}


def _numeric_properties(body: bytes) -> dict[int, int]:
    """The 2- and 4-byte integer properties of a CONNACK body, up to the first unreadable one
    (malformed properties are not ours to police here: what was read so far is returned)."""
    found: dict[int, int] = {}
    try:
        decoded = decode_varint(body, 2) if len(body) > 2 else None
    except ProtocolError:
        decoded = None
    if decoded is None:
        return found
    length, pos = decoded
    end = min(pos + length, len(body))
    while pos < end:
        ident = body[pos]
        pos += 1
        size = _FIXED_PROPERTY_SIZES.get(ident)
        if size is None:
            for _ in range(2 if ident == 0x26 else 1):  # a user property is a pair of strings
                if pos + 2 > end:
                    return found
                pos += 2 + struct.unpack_from("!H", body, pos)[0]
            continue
        if pos + size > end:
            return found
        if size in _NUMERIC_FORMATS:
            found.setdefault(ident, int(struct.unpack_from(_NUMERIC_FORMATS[size], body, pos)[0]))
        pos += size
    return found


def parse_suback(body: bytes) -> list[int]:
    """Reason codes of a SUBACK (one per filter; >= 0x80 is a refusal)."""
    if len(body) < 3:
        raise ProtocolError("SUBACK too short")
    decoded = decode_varint(body, 2)
    if decoded is None:
        raise ProtocolError("SUBACK properties truncated")
    props_len, pos = decoded
    return list(body[pos + props_len :])


CONNACK_REASONS = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x97: "quota exceeded",
}

DISCONNECT_REASONS = {
    0x00: "normal disconnection",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x87: "not authorized",
    0x89: "server busy",
    0x8B: "server shutting down",
    0x8D: "keep alive timeout",
    0x8E: "session taken over: another client connected with our client id",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x9C: "use another server",
    0x9D: "server moved",
}
SESSION_TAKEN_OVER = 0x8E
