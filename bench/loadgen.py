"""Load generator: realistic device messages published at C-client speed.

Payloads are built before the clock starts; a raw MQTT 5 publisher then writes pre-encoded
PUBLISH packets, keeping as many QoS 1 messages in flight as the broker's Receive Maximum
allows, so the generator itself is never the bottleneck of a measurement.
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
import zlib
from dataclasses import dataclass

import orjson

from gateway.sources.mqtt import wire

#: Share of each kind in a community (smoke detectors dominate, as in the demo fixture).
MIX = (("smoke", 0.70), ("bin", 0.12), ("manhole", 0.08), ("throw_camera", 0.10))
#: Device time of the first message (epoch ms): an hour before the run, so that every
#: message lies within what the gateway accepts (7 days back, 5 minutes ahead).
T0_MS = (int(time.time()) - 3600) * 1000


@dataclass(frozen=True, slots=True)
class Device:
    """A benchmark device: id and kind."""

    device_id: str
    kind: str


def make_devices(count: int) -> list[Device]:
    """``count`` devices in the community mix, ids ``<kind>-<n>``."""
    devices = []
    for kind, share in MIX:
        devices += [Device(f"b{kind[:3]}-{i}", kind) for i in range(round(count * share))]
    return devices


def _payload(device: Device, seq: int, rng: random.Random) -> bytes:
    ts = T0_MS + seq * 1000  # unique per device: each message is a distinct point
    if device.kind == "smoke":
        doc: dict[str, object] = {
            "state": "normal", "smoke": round(rng.uniform(0, 0.05), 3),
            "temperature": round(rng.uniform(18, 28), 1), "battery": rng.randint(40, 100),
            "rsrp": -95, "snr": 8,
        }  # fmt: skip
    elif device.kind == "bin":
        # Bins fill slowly and smoothly, as real ones do (25-75 %: no threshold crossed by
        # noise; alert storms are the fault suite's business, not this throughput figure).
        base = 250 + zlib.crc32(device.device_id.encode()) % 500
        doc = {
            "distance": base + rng.randint(-5, 5),
            "temperature": 21.5,
            "position": "normal",
            "battery": 77,
        }
    elif device.kind == "manhole":
        doc = {
            "state": "normal",
            "tilt": round(rng.uniform(0, 3), 2),
            "water_level": 35.0,
            "battery": 90,
        }
    else:
        doc = {"event": "heartbeat"}
    doc["ts"], doc["seq"] = ts, seq
    return orjson.dumps(doc)


def make_messages(devices: list[Device], total: int, seed: int = 1) -> list[tuple[str, bytes]]:
    """``total`` (topic, payload) pairs, devices taking turns."""
    rng = random.Random(seed)
    out = []
    for n in range(total):
        device = devices[n % len(devices)]
        out.append(
            (f"scc/v1/{device.device_id}/telemetry", _payload(device, n // len(devices) + 1, rng))
        )
    return out


def publish_packets(messages: list[tuple[str, bytes]], qos: int) -> list[bytes]:
    """Encode PUBLISH packets (packet ids 1..65535 cycling for QoS 1)."""
    packets = []
    for n, (topic, payload) in enumerate(messages):
        raw_topic = topic.encode()
        head = struct.pack("!H", len(raw_topic)) + raw_topic
        if qos:
            head += struct.pack("!H", n % 65535 + 1)
        body = head + b"\x00" + payload  # no properties
        packets.append(bytes([0x30 | (qos << 1)]) + wire.encode_varint(len(body)) + body)
    return packets


async def publish(port: int, packets: list[bytes], qos: int, client_id: str) -> float:
    """Send every packet; return seconds taken (until the last PUBACK for QoS 1)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opts = wire.ConnectOptions(client_id=client_id, clean_start=True, session_expiry_s=0)
    writer.write(wire.connect_packet(opts))
    head = await reader.readexactly(2)
    length = head[1]  # CONNACK is short: one length byte
    body = await reader.readexactly(length)
    window = _receive_maximum(body)
    started = time.perf_counter()
    if qos == 0:
        for start in range(0, len(packets), 2000):
            writer.write(b"".join(packets[start : start + 2000]))
            await writer.drain()
    else:
        acked = [0]
        acks = asyncio.create_task(_count_acks(reader, acked))
        await _send_windowed(writer, packets, window, acked, rate=None)
        for _ in range(60_000):  # until the last PUBACK, at most a minute
            if acked[0] >= len(packets):
                break
            await asyncio.sleep(0.001)
        acks.cancel()
    writer.write(wire.DISCONNECT_NORMAL)
    await writer.drain()
    elapsed = time.perf_counter() - started
    writer.close()
    return elapsed


def _receive_maximum(connack_body: bytes) -> int:
    """The broker's Receive Maximum from CONNACK properties (65535 when absent)."""
    decoded = wire.decode_varint(connack_body, 2)
    if decoded is None:
        return 65535
    length, pos = decoded
    props = connack_body[pos : pos + length]
    i = 0
    while i < len(props):
        ident = props[i]
        if ident == wire.PROP_RECEIVE_MAXIMUM:
            return int(struct.unpack_from("!H", props, i + 1)[0])
        # Skip what we do not need: 4-byte, 2-byte, 1-byte or length-prefixed properties.
        if ident in (0x11, 0x27):
            i += 5
        elif ident in (0x13, 0x22):
            i += 3
        elif ident in (0x24, 0x25, 0x28, 0x29, 0x2A):
            i += 2
        else:
            size = struct.unpack_from("!H", props, i + 1)[0]
            i += (
                3
                + size
                + (2 + struct.unpack_from("!H", props, i + 3 + size)[0] if ident == 0x26 else 0)
            )
    return 65535


async def publish_paced(port: int, packets: list[bytes], rate: float, client_id: str) -> float:
    """Publish QoS 1 packets at ``rate`` msg/s (in 10 ms slices), never exceeding the
    broker's Receive Maximum in flight; return seconds taken."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    opts = wire.ConnectOptions(client_id=client_id, clean_start=True, session_expiry_s=0)
    writer.write(wire.connect_packet(opts))
    head = await reader.readexactly(2)
    window = _receive_maximum(await reader.readexactly(head[1]))
    acked = [0]
    acks = asyncio.create_task(_count_acks(reader, acked))
    started = time.perf_counter()
    await _send_windowed(writer, packets, window, acked, rate)
    elapsed = time.perf_counter() - started
    acks.cancel()
    writer.write(wire.DISCONNECT_NORMAL)
    await writer.drain()
    writer.close()
    return elapsed


async def _send_windowed(
    writer: asyncio.StreamWriter,
    packets: list[bytes],
    window: int,
    acked: list[int],
    rate: float | None,
) -> None:
    """Write packets in slices, paced at ``rate`` msg/s (None: flat out), keeping at most
    ``window`` unacknowledged."""
    slice_n = min(max(1, round(rate / 100)) if rate else 2000, max(1, window // 4))
    started = time.perf_counter()
    for index in range(0, len(packets), slice_n):
        if rate:
            delay = started + index / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        for _ in range(60_000):  # bounded wait (a minute) for the in-flight window
            if index + slice_n - acked[0] <= window:
                break
            await asyncio.sleep(0.001)
        writer.write(b"".join(packets[index : index + slice_n]))
        await writer.drain()


#: A PUBACK with reason "success" and no properties, as Mosquitto sends them: ``40 02 id id``.
_PUBACK_HEAD = 0x40


async def _count_acks(reader: asyncio.StreamReader, acked: list[int]) -> None:
    """Count PUBACKs as they arrive.

    The generator shares the machine with the system it measures, so the common case costs
    next to nothing: a whole buffer of plain four-byte PUBACKs is counted in one step
    (every fourth byte a PUBACK head and every second a length of 2); anything else is
    walked packet by packet.
    """
    buf = bytearray()
    while data := await reader.read(262144):
        buf += data
        whole = len(buf) - len(buf) % 4
        if whole and _all_plain_acks(buf, whole):
            acked[0] += whole // 4
            del buf[:whole]
            continue
        pos = 0
        while len(buf) - pos >= 2:
            decoded = wire.decode_varint(buf, pos + 1)
            if decoded is None or decoded[1] + decoded[0] > len(buf):
                break
            if buf[pos] >> 4 == 4:
                acked[0] += 1
            pos = decoded[1] + decoded[0]
        del buf[:pos]


def _all_plain_acks(buf: bytearray, end: int) -> bool:
    """Whether ``buf[:end]`` is a run of ``40 02 id id`` packets."""
    heads, lengths = buf[0:end:4], buf[1:end:4]
    return heads.count(_PUBACK_HEAD) == len(heads) and lengths.count(2) == len(lengths)


def main() -> None:
    """``python -m bench.loadgen --port P --rate R --seconds S``: steady background load."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=10_000)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--devices", type=int, default=10_000)
    args = parser.parse_args()
    total = int(args.rate * args.seconds)
    packets = publish_packets(make_messages(make_devices(args.devices), total), qos=1)
    print("ready", flush=True)
    elapsed = asyncio.run(publish_paced(args.port, packets, args.rate, "bench-background"))
    print(f"published {total} in {elapsed:.1f} s = {total / elapsed:.0f} msg/s", flush=True)


if __name__ == "__main__":
    main()
